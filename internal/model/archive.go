package model

import (
	"archive/zip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/hdf5"

	"badprune/internal/atomicfile"
	"badprune/internal/guard"
	"badprune/internal/h5"
)

// Entries of a .keras archive, and the groups of its weights file.
const (
	archiveConfig   = "config.json"
	archiveMetadata = "metadata.json"
	archiveWeights  = "model.weights.h5"

	archiveLayers  = "layers"                         // Keras 3's container of a model's layers
	archiveTFKeras = "_layer_checkpoint_dependencies" // tf.keras 2.13-2.15's
)

// maxConfigSize bounds config.json: a zip can claim any size in a few bytes.
const maxConfigSize = 256 << 20

// archive is the entries of a .keras zip badprune uses.
type archive struct {
	config, metadata, weights *zip.File
}

func findEntries(r *zip.Reader) (archive, error) {
	var a archive
	for _, f := range r.File {
		var slot **zip.File
		switch f.Name {
		case archiveConfig:
			slot = &a.config
		case archiveMetadata:
			slot = &a.metadata
		case archiveWeights:
			slot = &a.weights
		default:
			continue
		}
		if *slot != nil {
			return a, fmt.Errorf("the archive holds two entries named %s", f.Name)
		}
		*slot = f
	}
	if a.config == nil {
		return a, errors.New("a zip without config.json: not a .keras archive")
	}
	if a.weights == nil {
		return a, errors.New("no model.weights.h5 in the archive (weights in another format are not supported)")
	}
	return a, nil
}

func readConfig(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > maxConfigSize {
		return nil, fmt.Errorf("config.json of %d bytes is too large", f.UncompressedSize64)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("config.json: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config.json: %v", err)
	}
	return b, nil
}

// extractWeights copies the archive's weights file to a temporary file: the
// HDF5 library reads only files (gonum's binding has no file images). The
// caller removes it with dropTemp.
func extractWeights(f *zip.File) (string, error) {
	rc, err := f.Open()
	if err != nil {
		return "", fmt.Errorf("model.weights.h5: %v", err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(os.TempDir(), "badprune-*.weights.h5")
	if err != nil {
		return "", fmt.Errorf("cannot extract model.weights.h5: %w", errors.Unwrap(err))
	}
	guard.Temp(tmp.Name())
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		dropTemp(tmp.Name())
		return "", fmt.Errorf("cannot extract model.weights.h5: %v", err)
	}
	return tmp.Name(), nil
}

func dropTemp(path string) {
	os.Remove(path)
	guard.Done(path)
}

// openWeights opens an extracted weights file. A crash supervisor is told
// that the archive, the file the user named, is being read.
func openWeights(tmp, archivePath string) (*hdf5.File, error) {
	guard.Reading(archivePath)
	h, err := h5.OpenUnwatched(tmp)
	switch {
	case errors.Is(err, h5.ErrNotHDF5):
		return nil, errors.New("model.weights.h5 is not an HDF5 file")
	case err != nil:
		return nil, fmt.Errorf("model.weights.h5: %w", err)
	}
	return h, nil
}

// loadArchive reads a Keras 3 or tf.keras .keras archive.
func loadArchive(path string) (*Model, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("damaged .keras archive: %v", err)
	}
	defer zr.Close()
	a, err := findEntries(&zr.Reader)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(a.config)
	if err != nil {
		return nil, err
	}
	if a.metadata != nil {
		// metadata.json says nothing badprune needs, but a damaged one is
		// a sign of a damaged archive.
		if md, err := readConfig(a.metadata); err != nil || !json.Valid(md) {
			return nil, errors.New("metadata.json: not valid JSON")
		}
	}
	m := &Model{Path: path, FullModel: true}
	tree, layers, err := parseModel(cfg)
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	m.Layers = layers
	tmp, err := extractWeights(a.weights)
	if err != nil {
		return nil, err
	}
	defer dropTemp(tmp)
	err = h5.Locked(func() error {
		f, err := openWeights(tmp, path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := readArchiveWeights(m, f, tree); err != nil {
			return fmt.Errorf("model.weights.h5: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := m.infer(); err != nil {
		return nil, err
	}
	return m, nil
}

// varsGroup is a "vars" group of a weights file: one Keras object's
// variables, datasets "0", "1", ... in the object's weight order.
type varsGroup struct {
	path string // as stored; Windows-written names keep their backslashes
	name string // the object's name, an attribute Keras 3.x writes, or ""
}

// Bounds on walking a weights file: hard links can make a group its own
// descendant.
const (
	maxWalkDepth   = 64
	maxWalkObjects = 1 << 20
)

// collectVars finds every vars group of a weights file, keyed by its
// parent's path normalized: backslashes (tf.keras on Windows joined paths
// with them, inside one group name) read as slashes, and tf.keras's
// container name read as Keras 3's. So "layers/conv2d" stands for
// "layers/conv2d/vars" and "_layer_checkpoint_dependencies\conv2d/vars".
func collectVars(f *hdf5.File) (map[string]varsGroup, error) {
	out := map[string]varsGroup{}
	seen := 0
	var walk func(g *hdf5.CommonFG, real string, norm []string) error
	walk = func(g *hdf5.CommonFG, real string, norm []string) error {
		if len(norm) > maxWalkDepth {
			return errors.New("groups nested too deeply")
		}
		n, err := g.NumObjects()
		if err != nil {
			return fmt.Errorf("cannot list group %q", real)
		}
		for i := uint(0); i < n; i++ {
			if seen++; seen > maxWalkObjects {
				return errors.New("too many objects")
			}
			name, err := g.ObjectNameByIndex(i)
			if err != nil {
				continue
			}
			typ, err := g.ObjectTypeByIndex(i)
			if err != nil || typ != hdf5.H5G_GROUP {
				continue // datasets, and links that lead nowhere
			}
			path := name
			if real != "" {
				path = real + "/" + name
			}
			if name == "vars" {
				v := varsGroup{path: path}
				if sub, err := g.OpenGroup(name); err == nil {
					if h5.HasAttr(sub, "name") {
						v.name, _ = h5.StringAttr(sub, "name")
					}
					sub.Close()
				}
				out[strings.Join(norm, "/")] = v
				continue
			}
			sub, err := g.OpenGroup(name)
			if err != nil {
				return fmt.Errorf("cannot open group %q", path)
			}
			parts := strings.Split(name, `\`)
			for j, p := range parts {
				if p == archiveTFKeras {
					parts[j] = archiveLayers
				}
			}
			err = walk(&sub.CommonFG, path, append(slices.Clone(norm), parts...))
			sub.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(&f.CommonFG, "", nil); err != nil {
		return nil, err
	}
	return out, nil
}

// snakeCase is Keras's naming.to_snake_case, which names an object's
// weights group after its class: Conv2D is "conv2d", MaxPooling2D
// "max_pooling2d".
func snakeCase(class string) string {
	s := regexp.MustCompile(`\W+`).ReplaceAllString(class, "")
	s = regexp.MustCompile(`(.)([A-Z][a-z]+)`).ReplaceAllString(s, "${1}_${2}")
	s = regexp.MustCompile(`([a-z])([A-Z])`).ReplaceAllString(s, "${1}_${2}")
	return strings.ToLower(s)
}

// splitCounter splits a group name "conv2d_3" into "conv2d" and 3; a name
// without a numeric suffix has counter 0.
func splitCounter(entry string) (string, int) {
	i := strings.LastIndexByte(entry, '_')
	if i > 0 {
		if k, err := strconv.Atoi(entry[i+1:]); err == nil && k > 0 && entry[i+1] != '0' {
			return entry[:i], k
		}
	}
	return entry, 0
}

// matchVars finds the vars group of each layer and nested model of n,
// whose groups' keys start with prefix. Keras does not name a layer's
// group after the layer but after its class, with a counter per class in
// the order of the model's layers: the third Conv2D's weights are in
// layers/conv2d_2/vars whatever the layer is called. tf.keras numbered them
// the same way, perhaps with gaps, so the i-th layer of a class takes the
// i-th group of that class. Keras 3.x also stores the layer's name on the
// group; where that disagrees with the counting, the name wins. want gets
// the key each node would have by counting, for messages.
func matchVars(n *kerasNode, prefix string, vars map[string]varsGroup, got, want map[*kerasNode]string) {
	type cand struct {
		k   int
		key string
	}
	byClass := map[string][]cand{}
	byName := map[string]string{}
	for key, v := range vars {
		entry, ok := strings.CutPrefix(key, prefix)
		if !ok || entry == "" || strings.Contains(entry, "/") {
			continue
		}
		base, k := splitCounter(entry)
		byClass[base] = append(byClass[base], cand{k, key})
		if v.name != "" {
			byName[v.name] = key
		}
	}
	for _, cs := range byClass {
		slices.SortFunc(cs, func(a, b cand) int { return a.k - b.k })
	}
	count := map[string]int{}
	for _, c := range n.children {
		base := snakeCase(c.class)
		i := count[base]
		count[base]++
		want[c] = prefix + base
		if i > 0 {
			want[c] += "_" + strconv.Itoa(i)
		}
		key := ""
		if cs := byClass[base]; i < len(cs) {
			key = cs[i].key
		}
		if v, ok := vars[key]; !ok || (v.name != "" && v.name != c.name) {
			if alt, ok := byName[c.name]; ok {
				key = alt
			}
		}
		if key != "" {
			got[c] = key
		}
		if c.layer == nil {
			sub := key
			if sub == "" {
				sub = want[c]
			}
			matchVars(c, sub+"/"+archiveLayers+"/", vars, got, want)
		}
	}
}

// readArchiveWeights loads every Conv2D and Dense layer's kernel (vars/0)
// and bias (vars/1) from an archive's weights file.
func readArchiveWeights(m *Model, f *hdf5.File, tree *kerasNode) error {
	vars, err := collectVars(f)
	if err != nil {
		return err
	}
	got, want := map[*kerasNode]string{}, map[*kerasNode]string{}
	matchVars(tree, archiveLayers+"/", vars, got, want)
	var nodes []*kerasNode
	tree.walk(func(n *kerasNode) {
		if n.layer != nil && (n.layer.Kind == Conv2D || n.layer.Kind == Dense) {
			nodes = append(nodes, n)
		}
	})
	for _, n := range nodes {
		l := n.layer
		key, ok := got[n]
		if !ok {
			return fmt.Errorf("layer %q (%s): no weights (no group %q)", l.Name, l.Kind, want[n]+"/vars")
		}
		dir := vars[key].path
		g, err := f.OpenGroup(dir)
		if err != nil {
			return fmt.Errorf("layer %q: cannot open group %q", l.Name, dir)
		}
		l.KernelPath = dir + "/0"
		if l.Kernel, l.KernelShape, err = readArray(g, "0"); err != nil {
			g.Close()
			return fmt.Errorf("layer %q: kernel %q: %w", l.Name, l.KernelPath, err)
		}
		if g.LinkExists("1") {
			l.BiasPath = dir + "/1"
			if l.Bias, _, err = readArray(g, "1"); err != nil {
				g.Close()
				return fmt.Errorf("layer %q: bias %q: %w", l.Name, l.BiasPath, err)
			}
		}
		g.Close()
	}
	return nil
}

// writeArchive is WriteCopy for a .keras archive: the weights file is
// extracted, patched like an HDF5 model, and stored back in place of the
// original entry; every other entry is copied raw, compressed bytes and
// header alike.
func (m *Model) writeArchive(dst string, force bool, layers []string) error {
	zr, err := zip.OpenReader(m.Path)
	if err != nil {
		return fmt.Errorf("%s: damaged .keras archive: %v", m.Path, err)
	}
	defer zr.Close()
	a, err := findEntries(&zr.Reader)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	tmp, err := extractWeights(a.weights)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	defer dropTemp(tmp)
	var patches []patch
	err = h5.Locked(func() error {
		f, err := openWeights(tmp, m.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		if patches, err = m.patches(f, layers); err != nil {
			return fmt.Errorf("model.weights.h5: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	wf, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	err = applyPatches(wf, patches)
	if cerr := wf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: patching model.weights.h5: %w", dst, err)
	}
	out, err := atomicfile.Create(dst, force)
	if err != nil {
		return err
	}
	defer out.Abort()
	zw := zip.NewWriter(out)
	for _, f := range zr.File {
		if f == a.weights {
			err = storeEntry(zw, f, tmp)
		} else {
			err = zw.Copy(f)
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", dst, f.Name, err)
		}
	}
	if err := zw.SetComment(zr.Comment); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return out.Commit()
}

// storeEntry writes the file at path as entry f's replacement, with f's
// header. A stored (uncompressed) entry, as Keras writes them, is written
// raw with the new checksum, so only the patched bytes and the checksum
// differ from the source; a compressed one is compressed anew.
func storeEntry(zw *zip.Writer, f *zip.File, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	fh := f.FileHeader
	fh.Extra = dropZip64(fh.Extra) // the writer adds its own when needed
	if fh.Method == zip.Store {
		sum := crc32.NewIEEE()
		n, err := io.Copy(sum, src)
		if err != nil {
			return err
		}
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return err
		}
		fh.CRC32 = sum.Sum32()
		fh.CompressedSize64, fh.UncompressedSize64 = uint64(n), uint64(n)
		w, err := zw.CreateRaw(&fh)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, src)
		return err
	}
	// Keep the MS-DOS time alone: CreateHeader would add a second
	// timestamp field for Modified.
	fh.Modified = time.Time{}
	fh.CRC32, fh.CompressedSize64, fh.UncompressedSize64 = 0, 0, 0
	w, err := zw.CreateHeader(&fh)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, src)
	return err
}

// dropZip64 removes the zip64 field (id 1) from a header's extra fields.
func dropZip64(extra []byte) []byte {
	var out []byte
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		n := int(binary.LittleEndian.Uint16(extra[2:]))
		if 4+n > len(extra) {
			break
		}
		if id != 1 {
			out = append(out, extra[:4+n]...)
		}
		extra = extra[4+n:]
	}
	return append(out, extra...)
}
