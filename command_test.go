package keygate

import (
	"strings"
	"testing"
)

func TestReadKeyLine(t *testing.T) {
	const key = "kg_live_0123456789abcdefghijABCDEFGHIJ0123456789abcdef"
	tests := []struct {
		name    string
		input   string
		want    string
		wantErr string
	}{
		{name: "a key and a newline", input: key + "\n", want: key},
		{name: "a key without a newline (pbpaste)", input: key, want: key},
		{name: "a Windows line ending is trimmed", input: key + "\r\n", want: key},
		{name: "surrounding spaces and tabs are trimmed", input: " \t" + key + " \n", want: key},
		{name: "only the first line is read", input: key + "\nsomething else\n", want: key},
		{name: "a line as long as the limit is read", input: strings.Repeat("k", maxKeyLine) + "\n", want: strings.Repeat("k", maxKeyLine)},
		{name: "a line beyond the limit is refused", input: strings.Repeat("k", maxKeyLine+1), wantErr: "too long to be a key"},
		{name: "empty input is no key", input: "", wantErr: "no key on standard input"},
		{name: "a blank first line is no key", input: "  \n" + key + "\n", wantErr: "no key on standard input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readKeyLine(strings.NewReader(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				if in := strings.TrimSpace(tt.input); in != "" && strings.Contains(err.Error(), in[:8]) {
					t.Errorf("the error %q quotes the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
