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

// A fault that begins again an interval after its end is a new one.
func TestAFaultThatBeginsAgainIsReportedAgain(t *testing.T) {
	var kinds []string
	f := New(0, func(l Line) { kinds = append(kinds, fmt.Sprint(l.Kind, l.Failures, l.Total)) })
	at := time.Now()
	for _, step := range []struct {
		failed bool
		after  time.Duration
	}{{true, time.Second}, {true, time.Second}, {false, time.Minute}, {true, time.Second}, {false, 0}} {
		var err error
		if step.failed {
			err = errors.New("disk full")
		}
		f.Observe(at, err)
		at = at.Add(step.after)
	}
	want := fmt.Sprint([]string{
		fmt.Sprint(Began, 1, 1), fmt.Sprint(Ended, 1, 2),
		fmt.Sprint(Began, 1, 1), fmt.Sprint(Ended, 0, 1),
	})
	if got := fmt.Sprint(kinds); got != want {
		t.Errorf("lines %s, want %s", got, want)
	}
}

// A fault that comes and goes, as the change-log poll of a gateway whose
// PostgreSQL has no connection slot left (it fails each time the usage
// flush holds the pool's one connection, and works 200 ms later), is a few
// lines an hour too, not two a second, and its failures are each counted
// once. Measured before: 45 lines in 20 s from one node.
func TestAFaultThatComesAndGoesIsAFewLines(t *testing.T) {
	var lines []Line
	f := New(time.Minute, func(l Line) { lines = append(lines, l) })
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	down := errors.New("FATAL: sorry, too many clients already (SQLSTATE 53300)")
	failures := 0
	for i := range 5 * 3600 { // an attempt each 200 ms, one in five failing
		at = at.Add(200 * time.Millisecond)
		if i%5 == 0 {
			f.Observe(at, down)
			failures++
		} else {
			f.Observe(at, nil)
		}
	}
	if len(lines) > 2*60+2 {
		t.Fatalf("%d lines for an hour of a fault that comes and goes each second, want at most two a minute", len(lines))
	}
	if lines[0].Kind != Began || lines[1].Kind != Ended {
		t.Errorf("first lines %+v, want the fault's beginning and its first end", lines[:2])
	}
	// Once it stops failing, the failures since the last line are said an
	// interval after it.
	for end := at.Add(2 * time.Minute); at.Before(end); at = at.Add(200 * time.Millisecond) {
		f.Observe(at, nil)
	}
	reported := 0
	for _, l := range lines {
		reported += l.Failures
	}
	if reported != failures {
		t.Errorf("lines report %d failures, want %d: each once", reported, failures)
	}
	if last := lines[len(lines)-1]; last.Kind != Ended || last.Total != failures || f.Failing() {
		t.Errorf("last line %+v, want Ended after %d failures", last, failures)
	}
	if allocs := testing.AllocsPerRun(100, func() { f.Observe(at, nil) }); allocs != 0 {
		t.Errorf("a success after the fault allocates %v times", allocs)
	}
}

// A fault that begins again within an interval of the previous line, and
// whose end is the first attempt an interval after that line, is reported
// by that attempt: key lookups on a quiet gateway may be the only
// attempts, three failed lookups (three clients answered 503) and the next
// one, which works, an hour later. Before, that success ended the fault
// without a line, and the failures waited for yet another attempt.
func TestAQuietFaultEndingAnIntervalLaterIsReported(t *testing.T) {
	var lines []Line
	f := New(time.Minute, func(l Line) { lines = append(lines, l) })
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	down := errors.New("connection refused")
	f.Observe(at, down)
	f.Observe(at.Add(time.Second), nil) // began, ended
	for _, s := range []time.Duration{30, 31, 32} {
		// Within the minute, and failing for less than 5 s: quiet (see
		// TestAnOutageSoonAfterAnotherIsReportedWithinSeconds).
		f.Observe(at.Add(s*time.Second), down)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines before the fault's end, want the first fault's 2", len(lines))
	}
	f.Observe(at.Add(time.Hour), nil)
	if len(lines) != 3 || lines[2].Kind != Ended || lines[2].Failures != 3 || f.Failing() {
		t.Fatalf("after a success an hour later: lines %+v, want a third, Ended with the 3 failures", lines)
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

// An outage that begins within an interval of the previous fault's end is
// not a fault that comes and goes: once it has failed for a twelfth of the
// interval without a success between its attempts, it is reported as
// beginning, not in a "still fails" line up to a minute later (a blip,
// then a real outage 9 s after it: its first line came 51 s late).
func TestAnOutageSoonAfterAnotherIsReportedWithinSeconds(t *testing.T) {
	var lines []Line
	f := New(time.Minute, func(l Line) { lines = append(lines, l) })
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	down := errors.New("connection refused")
	f.Observe(at, down)
	f.Observe(at.Add(time.Second), nil) // a blip: Began, then Ended
	outage := at.Add(10 * time.Second)
	at = outage
	for ; at.Before(outage.Add(30 * time.Second)); at = at.Add(200 * time.Millisecond) {
		f.Observe(at, down)
	}
	if len(lines) < 3 || lines[2].Kind != Began || lines[2].Since != outage || lines[2].Err != down {
		t.Fatalf("lines %+v, want the blip's two, then the outage's beginning", lines)
	}
	if late := lines[2].Since.Add(lines[2].Duration).Sub(outage); late > 6*time.Second {
		t.Errorf("the outage was first reported %v after it began, want within 5 s", late)
	}
	f.Observe(at, nil)
	if last := lines[len(lines)-1]; last.Kind != Ended || last.Total != 150 {
		t.Errorf("last line %+v, want the outage's end after its 150 failures", last)
	}
}

// A fault that comes and goes at other rhythms than every other attempt
// is a few lines a minute too, and each failure is in exactly one line:
// one that fails for seconds between its successes (longer than
// promoteAfter, so it is promoted to Began) is promoted at most once an
// interval, where each promotion and the success after it were two lines
// every few seconds; and failures that came and went within an interval
// are not dropped when the next one comes an interval after the line
// before them (it Began a fault of its own, with one failure).
func TestAFaultThatComesAndGoesAtOtherRhythmsIsAFewLines(t *testing.T) {
	for _, c := range []struct {
		name  string
		step  time.Duration
		fails func(i int) bool
	}{
		{"fails 6 s, works 1 s", time.Second, func(i int) bool { return i%7 != 6 }},
		{"one attempt in ten works, each second", time.Second, func(i int) bool { return i%10 != 9 }},
		{"one attempt in thirty works, each 200 ms", 200 * time.Millisecond, func(i int) bool { return i%30 != 29 }},
		{"bursts: 8 s failing, 20 s working", 100 * time.Millisecond, func(i int) bool { return i%280 < 80 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var lines []Line
			f := New(time.Minute, func(l Line) { lines = append(lines, l) })
			at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
			end := at.Add(30 * time.Minute)
			failures := 0
			for i := 0; at.Before(end); i++ {
				var err error
				if c.fails(i) {
					err = errors.New("connection refused")
					failures++
				}
				f.Observe(at, err)
				at = at.Add(c.step)
			}
			f.Observe(at.Add(2*time.Minute), nil)
			if len(lines) > 30*5 {
				t.Errorf("%d lines in 30 minutes, want at most five a minute", len(lines))
			}
			reported := 0
			for _, l := range lines {
				reported += l.Failures
				if l.Total < l.Failures || l.Duration != 0 && l.Since.IsZero() {
					t.Errorf("line %+v: Total below Failures, or no Since", l)
				}
			}
			if reported != failures {
				t.Errorf("lines report %d failures, want %d: each once", reported, failures)
			}
		})
	}
}

// A failure that came and went within an interval of the previous line is
// in the next line, also when that line is a failure's an interval later:
// it was dropped by the Began of a fault of its own, with one failure.
func TestFailuresThatCameAndWentAreInTheNextFailuresLine(t *testing.T) {
	var lines []Line
	f := New(time.Minute, func(l Line) { lines = append(lines, l) })
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	down := errors.New("connection refused")
	f.Observe(at, down)
	f.Observe(at.Add(time.Second), nil)     // Began, Ended
	f.Observe(at.Add(10*time.Second), down) // came and went
	f.Observe(at.Add(11*time.Second), nil)
	f.Observe(at.Add(70*time.Second), down) // an interval after the Ended line
	if len(lines) != 3 || lines[2].Kind != Continues || lines[2].Failures != 2 || lines[2].Total != 3 || lines[2].Since != at {
		t.Fatalf("lines %+v, want the third to say both failures since the second, of the fault since %v", lines, at)
	}
	f.Observe(at.Add(71*time.Second), nil)
	if last := lines[len(lines)-1]; last.Kind != Ended || last.Total != 3 {
		t.Errorf("last line %+v, want the end after 3 failures", last)
	}
}
