//go:build !linux

package h5data

func adviseHuge([]float32) {}
