package testservers

import (
	"testing"
	"time"
)

// A test that needs a second of a day, begun 300 ms before midnight UTC on
// the clock it reads, starts in the next day; begun at noon, at once.
func TestRoomInPeriodWaitsOutTheEndOfADay(t *testing.T) {
	at := func(wall time.Time) func() time.Time {
		offset := time.Until(wall)
		return func() time.Time { return time.Now().Add(offset) }
	}
	midnight := time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)
	clock := at(midnight.Add(-300 * time.Millisecond))
	RoomInPeriod(t, clock, Day, time.Second)
	if got := clock(); got.Before(midnight) || got.After(midnight.Add(time.Second)) {
		t.Errorf("300 ms before midnight, needing a second: returned at %s, want just after midnight", got.Format(time.RFC3339Nano))
	}
	clock = at(midnight.Add(12 * time.Hour))
	began := time.Now()
	RoomInPeriod(t, clock, Day, time.Minute)
	RoomInPeriod(t, clock, Hour, time.Minute)
	if waited := time.Since(began); waited > 100*time.Millisecond {
		t.Errorf("at noon, needing a minute of the day and of the hour: waited %v", waited)
	}
	clock = at(midnight.Add(12*time.Hour - 200*time.Millisecond))
	RoomInPeriod(t, clock, Hour, time.Second)
	if got := clock(); got.Hour() != 12 {
		t.Errorf("200 ms before 12:00, needing a second of the hour: returned at %s, want in the hour from 12:00", got.Format(time.RFC3339Nano))
	}
}
