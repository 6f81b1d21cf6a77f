package keygate_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// terminal opens a pseudo-terminal: what is written to master is read from
// slave as a person's typing, and slave is a terminal to term.IsTerminal,
// so `caddy keys` asks its questions on it.
func terminal(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// TestRevokeByOwnerAsksOfOneKeyAsOne: `caddy keys revoke --owner` on a
// terminal asks of the keys it is about to revoke in words a person reads:
// "1 active key … using it", "2 active keys … using them". Until session 34
// it asked "Revoke 1 active keys of owner …? Clients using it …" of any
// number.
func TestRevokeByOwnerAsksOfOneKeyAsOne(t *testing.T) {
	g := scriptGateway(t)
	g.issue("--name", "solo", "--owner", "solo", "--scope", "mail.send")
	g.issue("--name", "one", "--owner", "pair", "--scope", "mail.send")
	g.issue("--name", "two", "--owner", "pair", "--scope", "mail.send")
	for _, c := range []struct{ owner, want string }{
		{"solo", `Revoke 1 active key of owner "solo"? Clients using it get revoked_key within a second. [y/N]`},
		{"pair", `Revoke 2 active keys of owner "pair"? Clients using them get revoked_key within a second. [y/N]`},
	} {
		master, slave := terminal(t)
		if _, err := master.WriteString("n\n"); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := g.keysStdin(slave, "revoke", "--owner", c.owner)
		if exitStatus(t, err) == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "not revoked") {
			t.Errorf("caddy keys revoke --owner %s, answered n: %v %q; want it to ask %q and revoke nothing", c.owner, err, errOut, c.want)
		}
	}
}
