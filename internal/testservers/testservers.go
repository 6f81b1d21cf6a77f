// Package testservers starts throwaway database servers (Redis, PostgreSQL)
// on free loopback ports for tests, and stops them when the test ends.
//
// A missing server binary skips the test on a developer machine and fails it
// in CI (CI=true), where skipping would hide that nothing was tested.
package testservers

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// lookBinary returns the path of the named server binary, or ends the test:
// Fatal in CI, Skip elsewhere, both with how to install it.
func lookBinary(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	skipOrFail(t, fmt.Sprintf("%s not found in PATH; install it with: %s", name, install))
	return ""
}

// skipOrFail ends a test that lacks a server: Fatal in CI, where skipping
// would hide that nothing was tested, Skip elsewhere.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// waitUntil calls ready every 20ms until it returns nil or timeout passes,
// and then returns its last error.
func waitUntil(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
