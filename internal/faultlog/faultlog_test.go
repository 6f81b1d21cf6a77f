package faultlog

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// An hour of a store outage seen by a 200 ms poll, then its end: three
// kinds of line, one summary a minute, every failure counted once.
func TestAnOutageIsAFewLinesNotOnePerFailure(t *testing.T) {
	var lines []Line
	f := New(time.Minute, func(l Line) { lines = append(lines, l) })
	start := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	at := start
	for range 5 {
		f.Observe(at, nil) // healthy: nothing to say
		at = at.Add(200 * time.Millisecond)
	}
	if len(lines) != 0 {
		t.Fatalf("successes were reported: %+v", lines)
	}
	down := errors.New("connection refused")
	failures := 0
	for end := at.Add(time.Hour); at.Before(end); at = at.Add(200 * time.Millisecond) {
		f.Observe(at, down)
		failures++
	}
	if !f.Failing() {
		t.Error("Failing() = false during the outage")
	}
	f.Observe(at, nil)
	f.Observe(at.Add(time.Second), nil)
	if f.Failing() {
		t.Error("Failing() = true after the outage")
	}

	if len(lines) != 61 {
		t.Fatalf("%d lines for an hour-long outage, want 61 (began, a summary each minute after, ended)", len(lines))
	}
	first, last := lines[0], lines[len(lines)-1]
	if first.Kind != Began || first.Err != down || first.Failures != 1 || !first.Since.Equal(at.Add(-time.Hour)) {
		t.Errorf("first line %+v", first)
	}
	reported := 1
	for i, l := range lines[1 : len(lines)-1] {
		if l.Kind != Continues || l.Err != down || l.Failures != 300 {
			t.Errorf("summary %d: %+v, want 300 failures a minute", i, l)
		}
		reported += l.Failures
	}
	if last.Kind != Ended || last.Err != nil || last.Total != failures || last.Duration != time.Hour {
		t.Errorf("last line %+v, want Ended after %d failures over an hour", last, failures)
	}
	if reported+last.Failures != failures {
		t.Errorf("lines report %d failures, want %d: each once", reported+last.Failures, failures)
	}
}

func TestAFaultThatBeginsAgainIsReportedAgain(t *testing.T) {
	var kinds []string
	f := New(0, func(l Line) { kinds = append(kinds, fmt.Sprint(l.Kind, l.Failures, l.Total)) })
	at := time.Now()
	for _, failed := range []bool{true, true, false, true, false} {
		var err error
		if failed {
			err = errors.New("disk full")
		}
		f.Observe(at, err)
		at = at.Add(time.Second)
	}
	want := fmt.Sprint([]string{
		fmt.Sprint(Began, 1, 1), fmt.Sprint(Ended, 1, 2),
		fmt.Sprint(Began, 1, 1), fmt.Sprint(Ended, 0, 1),
	})
	if got := fmt.Sprint(kinds); got != want {
		t.Errorf("lines %s, want %s", got, want)
	}
}

// A success while nothing fails, every good poll and flush, takes no lock:
// it does not wait behind a line being written to a slow log, and a fault's
// lines still come in order around it.
func TestASuccessWhileNothingFailsTakesNoLock(t *testing.T) {
	var kinds []Kind
	f := New(0, func(l Line) { kinds = append(kinds, l.Kind) })
	at := time.Now()
	f.Observe(at, errors.New("disk full"))
	f.Observe(at, nil)

	f.mu.Lock() // a line being written, for as long as the test likes
	done := make(chan struct{})
	go func() {
		f.Observe(at, nil)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a success waited for the lock while nothing failed")
	}
	f.mu.Unlock()
	if allocs := testing.AllocsPerRun(100, func() { f.Observe(at, nil) }); allocs != 0 {
		t.Errorf("a success allocates %v times", allocs)
	}
	if fmt.Sprint(kinds) != fmt.Sprint([]Kind{Began, Ended}) {
		t.Errorf("lines %v, want Began then Ended", kinds)
	}
}
