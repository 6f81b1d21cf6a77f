//go:build !unix

package store

// sqliteHolder cannot tell on this system; restore relies on its question.
func sqliteHolder(path string) (pid int, open bool, err error) { return 0, false, nil }
