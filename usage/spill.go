package usage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Spill keeps usage deltas in files when the store cannot take them: a
// gateway whose final flush fails at a graceful stop (the store unreachable
// or locked) flushes to a Spill instead, and adds what it kept to the store
// at its next start. It is a Sink, so Recorder.Flush can write to it.
//
// Each flush is one file, written whole or not at all (a temporary file
// renamed into place). A file is claimed (renamed to NAME.adding) before its
// counts are added to the store, and removed after: a file whose removal
// fails (a directory gone read-only) is never added again, and a crash
// between the claim and the addition loses that file's counts instead of
// adding them twice; a leftover NAME.adding says so.
type Spill struct {
	// Dir holds the files; it is created when first written.
	Dir string
	// Name starts each file's name, to tell the stores sharing Dir apart.
	Name string
	// Also are other Names of the same store (a name from an older
	// version): their files are this store's too, added with its own.
	Also []string
	// Store names the store in each file (its URI, password redacted), so
	// a gateway opening another store can say whose counts wait there.
	Store string
}

// spillFile is a Spill file's content.
type spillFile struct {
	Version int                `json:"version"`
	Store   string             `json:"store,omitempty"`
	Deltas  []store.UsageDelta `json:"deltas"`
}

// AddUsage writes deltas to a new file.
func (s Spill) AddUsage(_ context.Context, deltas []store.UsageDelta) error {
	b, err := json.Marshal(spillFile{Version: 1, Store: s.Store, Deltas: deltas})
	if err != nil {
		return fmt.Errorf("keygate usage: keeping counts in %s: %w", s.Dir, err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("keygate usage: keeping counts: %w", err)
	}
	f, err := os.CreateTemp(s.Dir, "."+s.Name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("keygate usage: keeping counts: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	name := filepath.Join(s.Dir, s.Name+"-"+strconv.FormatInt(time.Now().UnixNano(), 10)+".json")
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("keygate usage: keeping counts in %s: %w", s.Dir, err)
	}
	return nil
}

// Files returns the files kept for this Name (and Also), oldest first.
func (s Spill) Files() ([]string, error) {
	files, err := s.glob("-*.json")
	// Same-length nanosecond stamps after same-length names: oldest
	// first within a name.
	sort.Strings(files)
	return files, err
}

// glob returns the files in Dir whose names are one of the store's names
// followed by suffix.
func (s Spill) glob(suffix string) ([]string, error) {
	var files []string
	for _, name := range append([]string{s.Name}, s.Also...) {
		f, err := filepath.Glob(filepath.Join(s.Dir, name+suffix))
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	return files, nil
}

// Owns reports whether the file base (a name in Dir) is kept for this
// store.
func (s Spill) Owns(base string) bool {
	for _, name := range append([]string{s.Name}, s.Also...) {
		if strings.HasPrefix(base, name+"-") {
			return true
		}
	}
	return false
}

// Others returns the files in Dir kept for other Names, by the store they
// name ("" for a file from before files named their store): counts that
// wait for a gateway to open that store under that name.
func (s Spill) Others() (map[string][]string, error) {
	files, err := filepath.Glob(filepath.Join(s.Dir, "*-*.json"))
	if err != nil {
		return nil, err
	}
	others := map[string][]string{}
	for _, name := range files {
		if s.Owns(filepath.Base(name)) {
			continue
		}
		var f spillFile
		if b, err := os.ReadFile(name); err == nil {
			json.Unmarshal(b, &f) // a file that is not one names no store
		}
		others[f.Store] = append(others[f.Store], name)
	}
	return others, nil
}

// Claimed returns the files a process claimed for adding and did not
// remove: it stopped between claiming and removing, so their counts may or
// may not be in the store. They are never added again.
func (s Spill) Claimed() ([]string, error) {
	return s.glob("-*.json.adding")
}

// AddTo adds every kept file to sink, oldest first, removing each once
// added, and returns what it added. It stops at the first file sink refuses,
// which stays for the next call.
func (s Spill) AddTo(ctx context.Context, sink Sink) (Counts, error) {
	var added Counts
	files, err := s.Files()
	if err != nil {
		return added, fmt.Errorf("keygate usage: kept counts in %s: %w", s.Dir, err)
	}
	for _, name := range files {
		claimed := name + ".adding"
		if err := renameFile(name, claimed); err != nil {
			return added, fmt.Errorf("keygate usage: the counts kept in %s wait, since the file cannot be renamed for adding: %w", name, err)
		}
		b, err := os.ReadFile(claimed)
		if err != nil {
			renameFile(claimed, name) // for the next try
			return added, fmt.Errorf("keygate usage: kept counts: %w", err)
		}
		var f spillFile
		if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
			// Set aside, so it does not stop the files after it.
			renameFile(claimed, name+".unreadable")
			return added, fmt.Errorf("keygate usage: kept counts in %s are not a usage file of version 1 (%v); set aside as %s.unreadable", name, err, filepath.Base(name))
		}
		if err := sink.AddUsage(ctx, f.Deltas); err != nil {
			renameFile(claimed, name) // for the next try
			return added, fmt.Errorf("keygate usage: adding the counts kept in %s: %w", name, err)
		}
		if err := removeFile(claimed); err != nil && !errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("keygate usage: the counts kept in %s were added, and are not added again; remove %s by hand: %w",
				name, filepath.Base(claimed), err)
			return added.plus(CountsOf(f.Deltas)), err
		}
		added = added.plus(CountsOf(f.Deltas))
	}
	return added, nil
}

// renameFile and removeFile are the file system's, but for tests.
var (
	renameFile = os.Rename
	removeFile = os.Remove
)
