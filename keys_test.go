package keygate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

func TestKeySpecRefusesWhatWouldMisleadLater(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name string
		spec KeySpec
		want string // "" = accepted
	}{
		{"a future expiry", KeySpec{Expires: str("2027-01-31T00:00:00Z")}, ""},
		{"a duration", KeySpec{Expires: str("90d")}, ""},
		{"no expiry", KeySpec{Expires: str("never")}, ""},
		{"an expiry in the past", KeySpec{Expires: str("2020-01-01T00:00:00Z")}, "not in the future"},
		{"an expiry of right now", KeySpec{Expires: str(now.Format(time.RFC3339))}, "not in the future"},
		{"a negative duration", KeySpec{Expires: str("-5d")}, "want a duration"},
		{"a name with unicode", KeySpec{Name: str("Bestellbestätigung – shop")}, ""},
		{"a name with an escape sequence", KeySpec{Name: str("esc\x1b[31mRED")}, "printable"},
		{"a name with a line break", KeySpec{Name: str("one\ntwo")}, "printable"},
		{"a name that is not UTF-8", KeySpec{Name: str("bad\xffname")}, "printable"},
		{"an owner with a tab", KeySpec{Owner: str("team\tops")}, "printable"},
		{"an empty owner clears it", KeySpec{Owner: str("")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.apply(&store.Record{}, now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errBadInput)):
				t.Errorf("err = %v, want a bad-input error containing %q", err, tc.want)
			}
		})
	}
}

func TestUpdateCannotRelabelAKeysEnv(t *testing.T) {
	env := "live"
	_, err := updateKey(context.Background(), nil, "key_x", KeySpec{Env: &env}, "test")
	if err == nil || !errors.Is(err, errBadInput) || !strings.Contains(err.Error(), "env cannot be changed") {
		t.Errorf("err = %v, want env cannot be changed", err)
	}
}
