//go:build unix

package store

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// sameOwner gives file the owner and group of like, when like exists and
// this process may (as root restoring a store the caddy user runs on).
func sameOwner(file, like string) error {
	fi, err := os.Stat(like)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Getuid() && int(st.Gid) == os.Getgid()) {
		return nil
	}
	if err := os.Chown(file, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return nil
}
