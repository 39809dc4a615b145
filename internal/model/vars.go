package model

import (
	"archive/zip"
	"fmt"
	"strconv"

	"gonum.org/v1/hdf5"

	"badprune/internal/h5"
)

// readArchiveLayers reads, from the .keras archive m was loaded from, the
// weights of the layers loadArchive leaves alone: every layer with weights
// but Conv2D and Dense (SeparableConv2D, DepthwiseConv2D,
// BatchNormalization). A layer's vars group holds its weights as datasets
// "0", "1", ... in the layer's weight order (weightRoles); an optional
// weight absent from the layer (a bias with use_bias false) is absent
// there too. The shapes of these layers do not depend on their weights,
// so the model's shapes are already known; checkWeights checks them.
func readArchiveLayers(m *Model) error {
	var todo []*Layer
	for _, l := range m.Layers {
		if l.Kind != Conv2D && l.Kind != Dense && l.weightRoles() != nil {
			todo = append(todo, l)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	zr, err := zip.OpenReader(m.Path)
	if err != nil {
		return fmt.Errorf("damaged .keras archive: %v", err)
	}
	defer zr.Close()
	a, err := findEntries(&zr.Reader)
	if err != nil {
		return err
	}
	cfg, err := readConfig(a.config)
	if err != nil {
		return err
	}
	tree, _, err := parseModel(cfg)
	if err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	tmp, err := extractWeights(a.weights)
	if err != nil {
		return err
	}
	defer dropTemp(tmp)
	return h5.Locked(func() error {
		f, err := openWeights(tmp, m.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		vars, err := collectVars(f)
		if err != nil {
			return fmt.Errorf("model.weights.h5: %w", err)
		}
		got, want := map[*kerasNode]string{}, map[*kerasNode]string{}
		matchVars(tree, archiveLayers+"/", vars, got, want)
		nodes := map[string]*kerasNode{}
		tree.walk(func(n *kerasNode) {
			if n.layer != nil {
				nodes[n.layer.Name] = n
			}
		})
		for _, l := range todo {
			n := nodes[l.Name]
			key, ok := got[n]
			if n == nil || !ok {
				return fmt.Errorf("model.weights.h5: layer %q (%s): no weights (no group %q)", l.Name, l.KerasClass(), want[n]+"/vars")
			}
			if err := readVars(f, vars[key].path, l); err != nil {
				return fmt.Errorf("model.weights.h5: layer %q (%s): %w", l.Name, l.KerasClass(), err)
			}
		}
		return nil
	})
}

// readVars reads a layer's weights from its vars group dir.
func readVars(f *hdf5.File, dir string, l *Layer) error {
	g, err := f.OpenGroup(dir)
	if err != nil {
		return fmt.Errorf("cannot open group %q", dir)
	}
	defer g.Close()
	for i, role := range l.weightRoles() {
		name := strconv.Itoa(i)
		if !g.LinkExists(name) {
			if role.optional {
				continue
			}
			return fmt.Errorf("no %s (dataset %q)", role.names[0], dir+"/"+name)
		}
		v, shape, err := readArray(g, name)
		if err != nil {
			return fmt.Errorf("%s %q: %w", role.names[0], dir+"/"+name, err)
		}
		role.set(v, shape, dir+"/"+name)
	}
	return nil
}
