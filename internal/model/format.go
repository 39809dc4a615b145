package model

import (
	"errors"
	"io"
	"os"
	"strings"
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
	f, err := os.Open(path)
	if err != nil {
		return 0, errors.Unwrap(err) // os adds the path; callers add it once
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.IsDir() {
		return 0, errors.New("is a directory, not a model file")
	}
	b := make([]byte, len(hdf5Magic))
	n, _ := io.ReadFull(f, b)
	switch {
	case n == len(hdf5Magic) && string(b) == hdf5Magic:
		return hdf5File, nil
	case n >= len(zipMagic) && string(b[:len(zipMagic)]) == zipMagic:
		return zipFile, nil
	}
	return 0, errors.New("not a Keras model (neither HDF5 nor a .keras archive)")
}

// Format names the format of the file m was loaded from, one of the Format
// constants. It is read from where m's weights were found, which Clone
// keeps: a .keras archive stores them as <container>/<name>/vars/<i>
// (tf.keras's container being _layer_checkpoint_dependencies), Keras 2
// names them with TensorFlow's ":0" suffix, and Keras 3 HDF5 without it. A
// model made in memory by New reports FormatKeras2H5, the format Create
// writes. (A Keras 2 file from the Theano backend, whose names also lack
// ":0", reports FormatKeras3H5; both are HDF5 and written alike.)
func (m *Model) Format() string {
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
// ".keras" for an archive, ".h5" for HDF5.
func (m *Model) Ext() string {
	switch m.Format() {
	case FormatKeras3Archive, FormatTFKerasArchive:
		return ".keras"
	}
	return ".h5"
}
