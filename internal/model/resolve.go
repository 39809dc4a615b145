package model

// Resolve returns the name of the layer that name refers to: a layer
// called name, else the first layer with name among its Aliases. Users
// name layers as their own tools do (an ONNX node, its output, its weight),
// and every other part of badprune takes the resolved name.
func (m *Model) Resolve(name string) (string, bool) {
	if m.Layer(name) != nil {
		return name, true
	}
	for _, l := range m.Layers {
		for _, a := range l.Aliases {
			if a == name {
				return l.Name, true
			}
		}
	}
	return "", false
}
