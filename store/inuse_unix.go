//go:build unix

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// sqliteHolder returns the id of another process that has the SQLite
// database at path open, or 0 and false if none has. Every connection to a database in
// WAL mode, as keygate's are, holds a shared lock on one byte of its -shm
// file for as long as it is open (SQLite's "DMS" byte, at offset 128 in its
// unix VFS); asking the kernel whether a write lock on that byte would be
// granted finds the holder without taking anything. The pid is 0 when the
// holder is in another PID namespace (a container).
//
// It must not be called by a process that has the database open itself:
// POSIX locks belong to the process, so closing the descriptor it asks
// through would drop SQLite's own lock on that byte.
func sqliteHolder(path string) (pid int, open bool, err error) {
	f, err := os.Open(path + "-shm")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil // the last connection to close removes it
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: sqliteDMSByte, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		return 0, false, fmt.Errorf("asking who holds %s: %w", f.Name(), err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, false, nil
	}
	return int(lk.Pid), true, nil
}

// sqliteDMSByte is where SQLite's unix VFS keeps the lock every open
// connection shares: after the 8 WAL locks, which start at 120.
const sqliteDMSByte = 128
