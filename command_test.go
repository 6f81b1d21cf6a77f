package keygate

import (
	"os"
	"os/user"
	"path/filepath"
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

// TestTheCLINamesThePersonBehindTheServiceUser: run as the caddy user
// (runuser -u caddy, sudo -u caddy), a command's audit events name the user
// who logged in, from the kernel's login uid, else sudo's SUDO_USER.
func TestTheCLINamesThePersonBehindTheServiceUser(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	base := "cli " + me.Username + "@" + host
	loginUID := filepath.Join(t.TempDir(), "loginuid")
	defer func(f string) { loginUIDFile = f }(loginUIDFile)
	loginUIDFile = loginUID
	for _, c := range []struct {
		name, loginuid, sudoUser, want string
	}{
		{"no login uid, no sudo", "4294967295", "", base},
		{"no login uid file (another OS)", "", "", base},
		{"logged in as the user it runs as", me.Uid, "alice", base},
		{"logged in as another user", "4294967294", "", base + " (login uid 4294967294)"},
		{"the login uid wins over SUDO_USER", "4294967294", "mallory", base + " (login uid 4294967294)"},
		{"sudo from another user", "4294967295", "alice", base + " (sudo by alice)"},
		{"sudo from the same user", "4294967295", me.Username, base},
		{"a SUDO_USER with a control character is no name", "4294967295", "al\x1bice", base},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(loginUID)
			if c.loginuid != "" {
				os.WriteFile(loginUID, []byte(c.loginuid), 0o600)
			}
			t.Setenv("SUDO_USER", c.sudoUser)
			if got := cliActor(); got != c.want {
				t.Errorf("cliActor() = %q, want %q", got, c.want)
			}
		})
	}
}
