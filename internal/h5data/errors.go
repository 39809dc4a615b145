package h5data

import "fmt"

// KeyError is a dataset name that does not name a dataset in the file.
type KeyError struct {
	Key     string
	Labels  bool // the labels' name, else the images'
	Missing bool // no such link, else a link to something that is not a dataset
}

func (e *KeyError) Error() string {
	if e.Missing {
		return fmt.Sprintf("no dataset %q", e.Key)
	}
	return fmt.Sprintf("%q is not a dataset", e.Key)
}
