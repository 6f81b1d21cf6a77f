// Package faultlog reports a failure that may repeat many times a second,
// such as a store that cannot be reached, in a few log lines rather than one
// per attempt: the first failure, then one summary per interval while
// failures go on ("N more failures in the last minute"), then one line when
// an attempt succeeds again. A PostgreSQL outage seen by a 200 ms poll is
// three lines an hour instead of 18,000. A fault that comes and goes (a
// server whose connection slots are all taken fails every attempt that
// needs a new connection, and serves the others) is the same few lines: a
// failure within an interval of the previous line begins no new fault in
// the log, it is counted in the next line, at most one an interval.
//
// The package imports nothing from Caddy; callers turn a Line into a log
// entry at the level they choose.
package faultlog

import (
	"sync"
	"sync/atomic"
	"time"
)

// Kind says what a Line reports.
type Kind uint8

const (
	// Began: the first failure, after a success or ever.
	Began Kind = iota + 1
	// Continues: the failures since the previous line, once an interval
	// has passed since it and another failure is observed.
	Continues
	// Ended: the first success after failures; for a fault that came and
	// went since the previous line, the first success an interval after it.
	Ended
)

// Line is one report of a fault.
type Line struct {
	Kind Kind
	// Err is the latest failure; nil when the fault Ended.
	Err error
	// Failures counts the failures since the previous line (1 when the
	// fault Began).
	Failures int
	// Total counts the failures since the fault began (the last Began
	// line: failures that came and went after it are part of it).
	Total int
	// Since is when the fault began; Duration how long ago that is.
	Since    time.Time
	Duration time.Duration
}

// Fault tracks one kind of failure. It is safe for concurrent use.
type Fault struct {
	interval time.Duration
	report   func(Line)

	// down mirrors failing, or failures not reported yet, for Observe's
	// lock-free path: a success while nothing fails, the usual case, takes
	// no lock.
	down atomic.Bool

	mu       sync.Mutex
	failing  bool
	since    time.Time
	lastLine time.Time
	// quiet: the failure going on began within an interval of the
	// previous line, which it did not report; its end is not reported
	// either, its failures are in the next line.
	quiet bool
	// streak is when the failures going on without a success between
	// them began: a quiet fault that fails on for promoteAfter is a new
	// outage, not one that comes and goes, and is reported as one.
	streak time.Time
	// promoted is when a quiet fault was last reported as beginning: at
	// most one is an interval, so a fault that fails for seconds and works
	// for one, over and over, is not two lines every few seconds.
	promoted   time.Time
	total      int
	unreported int
}

// promoteAfter is how long a quiet fault must fail without a success
// between its attempts to be reported as beginning (Began), not in the
// next line an interval later: an outage that starts within a minute of
// the previous one's end is seen in the log within seconds. A fault that
// comes and goes (every other attempt working) never fails that long; one
// that fails for longer between its successes is promoted at most once an
// interval.
func (f *Fault) promoteAfter() time.Duration { return f.interval / 12 }

// New returns a Fault that calls report for each line, with a summary at
// most once per interval (default: a minute) while the failure goes on.
func New(interval time.Duration, report func(Line)) *Fault {
	if interval <= 0 {
		interval = time.Minute
	}
	return &Fault{interval: interval, report: report}
}

// Observe records the outcome of one attempt at now: a failure when err is
// not nil, else a success. It calls report when the attempt begins or ends
// the fault, or is the first attempt an interval after the previous line
// with failures since it to report. Lines are reported one at a time, in
// order, so report must not call Observe.
func (f *Fault) Observe(now time.Time, err error) {
	if err == nil && !f.down.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() { f.down.Store(f.failing || f.unreported > 0) }()
	due := now.Sub(f.lastLine) >= f.interval
	var l Line
	switch {
	case err == nil && (!f.failing || f.quiet):
		// Failures that came and went since the previous line: the end of
		// a quiet one too, if an interval has passed (the next attempt may
		// be hours away, a key lookup's on a quiet gateway).
		f.failing, f.quiet = false, false
		if f.unreported == 0 || !due {
			return
		}
		l = Line{Kind: Ended, Failures: f.unreported, Total: f.total, Since: f.since}
		f.lastLine, f.unreported = now, 0
	case err == nil:
		l = Line{Kind: Ended, Failures: f.unreported, Total: f.total, Since: f.since}
		f.failing, f.lastLine, f.unreported = false, now, 0
	case !f.failing && !f.lastLine.IsZero() && !due:
		// Back within an interval of the previous line: one fault that
		// comes and goes, not a new one a second (an attempt that works
		// and one that fails, over and over).
		f.failing, f.quiet, f.streak = true, true, now
		f.total++
		f.unreported++
		return
	case f.quiet && now.Sub(f.streak) >= f.promoteAfter() && (f.promoted.IsZero() || now.Sub(f.promoted) >= f.interval):
		// Failing on since the streak began: an outage of its own.
		f.unreported++
		l = Line{Kind: Began, Err: err, Failures: f.unreported, Total: f.unreported, Since: f.streak}
		f.since, f.lastLine, f.total, f.unreported, f.quiet, f.promoted = f.streak, now, f.unreported, 0, false, now
	case !f.failing && f.unreported > 0:
		// An interval after the previous line, with failures that came
		// and went since it: they and this one are the next line, of the
		// fault they continue (a Began would drop them).
		f.failing, f.lastLine, f.quiet = true, now, false
		f.total++
		l = Line{Kind: Continues, Err: err, Failures: f.unreported + 1, Total: f.total, Since: f.since}
		f.unreported = 0
	case !f.failing:
		f.failing, f.since, f.lastLine, f.total, f.unreported = true, now, now, 1, 0
		l = Line{Kind: Began, Err: err, Failures: 1, Total: 1, Since: now}
	default:
		f.total++
		f.unreported++
		if !due {
			return
		}
		l = Line{Kind: Continues, Err: err, Failures: f.unreported, Total: f.total, Since: f.since}
		f.lastLine, f.unreported, f.quiet = now, 0, false
	}
	l.Duration = now.Sub(l.Since)
	f.report(l)
}

// Failing reports whether the last attempt observed failed.
func (f *Fault) Failing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failing
}
