package testservers

import (
	"testing"
	"time"
)

// Periods a test can need to stay within: keygate counts usage in UTC
// hours and recipient quotas in UTC days and calendar months (a month ends
// where a day does).
const (
	Hour = time.Hour
	Day  = 24 * time.Hour
)

// RoomInPeriod waits, when need be, until the UTC period of length per
// (Hour or Day) that now is in has at least need left, so that what a test
// then does all lands in one period: a test that spends a key's daily
// quota and then expects the next send refused would see it allowed if the
// day turned between the two, and one that counts an hour's usage would
// find the sends split across two hours. Near the end of a period it
// sleeps into the next one (once a day for Day, so at most need once a
// run); otherwise it returns at once. now is the clock the code under test
// reads (time.Now for the real binary), so a test that runs it ahead reads
// the period it does.
//
// If the test then fails in another period than the one it waited in (it
// took longer than need), the failure says so.
func RoomInPeriod(tb testing.TB, now func() time.Time, per, need time.Duration) {
	tb.Helper()
	at := now()
	left := at.Truncate(per).Add(per).Sub(at) // Truncate is UTC-aligned for whole hours and days
	if left < need {
		tb.Logf("waiting %v for the next UTC %s: the test needs %v of one", left.Round(time.Millisecond), periodName(per), need)
		time.Sleep(left + 10*time.Millisecond)
		at = now()
	}
	start := at.Truncate(per)
	tb.Cleanup(func() {
		if tb.Failed() && now().Truncate(per) != start {
			tb.Logf("the UTC %s turned during the test (it began in the one from %s, and took longer than the %v it waited for)",
				periodName(per), start.UTC().Format(time.RFC3339), need)
		}
	})
}

func periodName(per time.Duration) string {
	if per == Hour {
		return "hour"
	}
	return "day"
}
