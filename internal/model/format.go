package model

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"badprune/internal/atomicfile"
)

// Formats of model files, as Format reports them.
const (
	FormatKeras2H5       = "keras2-h5"        // HDF5 written by Keras 2 (or badprune)
	FormatKeras3H5       = "keras3-h5"        // HDF5 written by Keras 3's model.save("x.h5")
	FormatKeras3Archive  = "keras3-archive"   // .keras zip written by Keras 3
	FormatTFKerasArchive = "tf.keras-archive" // .keras zip written by tf.keras 2.13-2.15
)

// container is the kind of file a model is stored in.
type container int

const (
	hdf5File container = iota
	zipFile
)

// Signatures at the start of the files Load reads.
const (
	hdf5Magic = "\x89HDF\r\n\x1a\n"
	zipMagic  = "PK\x03\x04"
)

// sniff tells an HDF5 file from a zip by their first bytes: a .keras name
// can hold Keras 2 HDF5, and a .h5 name a Keras 3 archive.
func sniff(path string) (container, error) {
	head, err := readHead(path)
	if err != nil {
		return 0, err
	}
	if c, ok := containerOf(head); ok {
		return c, nil
	}
	return 0, errors.New("not a Keras model (neither HDF5 nor a .keras archive)")
}

// containerOf tells the container of a Keras model by its first bytes.
func containerOf(head []byte) (container, bool) {
	switch s := string(head); {
	case strings.HasPrefix(s, hdf5Magic):
		return hdf5File, true
	case strings.HasPrefix(s, zipMagic):
		return zipFile, true
	}
	return 0, false
}

// A Format reads and writes model files of one kind besides Keras's, which
// Load reads: a format registers itself (RegisterFormat) from the init
// function of its package, imported for that side effect, as the image
// package's decoders do.
type Format struct {
	Name string // as Model.Format reports it, e.g. "onnx"
	Ext  string // of the copies WriteCopy makes, e.g. ".onnx"
	// Match reports whether a file whose first bytes are head (HeadSize of
	// them, fewer for a shorter file) is one of this format's.
	Match func(head []byte) bool
	// Load reads the model in the file at path (New makes it from the
	// layers). Errors name the file, as Load's and New's do.
	Load func(path string) (*Model, error)
	// WriteCopy writes to w a copy of the file m was loaded from in which
	// the named layers hold m's current weights and nothing else changed.
	WriteCopy func(m *Model, w io.Writer, layers []string) error
}

// HeadSize is the number of leading bytes a Format's Match sees.
const HeadSize = 64

var (
	formatsMu sync.RWMutex
	formats   []*Format
)

// RegisterFormat makes Read and WriteCopy handle files of f's format.
func RegisterFormat(f Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	formats = append(formats, &f)
}

// Read reads a model file of any format badprune knows, told by its
// content: Keras's (Load) or a registered one. Errors name the file.
func Read(path string) (*Model, error) {
	head, err := readHead(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, ok := containerOf(head); ok {
		return Load(path)
	}
	formatsMu.RLock()
	var match *Format
	names := []string{"Keras HDF5 or .keras archive"}
	for _, f := range formats {
		names = append(names, f.Name)
		if match == nil && f.Match(head) {
			match = f
		}
	}
	formatsMu.RUnlock()
	if match == nil {
		return nil, fmt.Errorf("%s: not a model file badprune reads (%s)", path, strings.Join(names, ", "))
	}
	m, err := match.Load(path)
	if err != nil {
		return nil, err
	}
	m.Path = path
	m.adapter = match
	return m, nil
}

// readHead returns the first HeadSize bytes of the file at path (fewer
// for a shorter file).
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.Unwrap(err) // os adds the path; callers add it once
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.IsDir() {
		return nil, errors.New("is a directory, not a model file")
	}
	b := make([]byte, HeadSize)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	return b[:n], nil
}

// writeFormat is WriteCopy for a model read by a registered format.
func (m *Model) writeFormat(dst string, force bool, layers []string) error {
	for _, name := range layers {
		if m.Layer(name) == nil {
			return fmt.Errorf("%s: no layer %q", m.Path, name)
		}
	}
	out, err := atomicfile.Create(dst, force)
	if err != nil {
		return err
	}
	defer out.Abort()
	w := bufio.NewWriterSize(out, 1<<20)
	if err := m.adapter.WriteCopy(m, w, layers); err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return out.Commit()
}

// Format names the format of the file m was loaded from: a registered
// format's name, or one of the Format constants. It is read from where m's weights were found, which Clone
// keeps: a .keras archive stores them as <container>/<name>/vars/<i>
// (tf.keras's container being _layer_checkpoint_dependencies), Keras 2
// names them with TensorFlow's ":0" suffix, and Keras 3 HDF5 without it. A
// model made in memory by New reports FormatKeras2H5, the format Create
// writes. (A Keras 2 file from the Theano backend, whose names also lack
// ":0", reports FormatKeras3H5; both are HDF5 and written alike.)
func (m *Model) Format() string {
	if m.adapter != nil {
		return m.adapter.Name
	}
	for _, l := range m.Layers {
		p := l.KernelPath
		if p == "" {
			continue
		}
		norm := strings.ReplaceAll(p, `\`, "/")
		switch {
		case strings.HasPrefix(norm, archiveTFKeras+"/"):
			return FormatTFKerasArchive
		case strings.HasPrefix(norm, archiveLayers+"/") && strings.Contains(norm, "/vars/"):
			return FormatKeras3Archive
		case m.FullModel && !strings.HasSuffix(p, ":0"):
			return FormatKeras3H5
		}
		return FormatKeras2H5
	}
	return FormatKeras2H5
}

// Ext is the file name extension for a copy of m in its own format:
// ".keras" for an archive, ".h5" for HDF5, a registered format's own.
func (m *Model) Ext() string {
	if m.adapter != nil {
		return m.adapter.Ext
	}
	switch m.Format() {
	case FormatKeras3Archive, FormatTFKerasArchive:
		return ".keras"
	}
	return ".h5"
}
