package testservers

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A port one test process handed out is never handed out by another while
// the first lives, even with nothing listening on it: a server stopped to be
// started again on its port (a Redis outage) keeps it. The other process
// here is this test binary again, picking ports from a range of two that
// holds this process's port.
func TestAPortHandedOutIsNotHandedOutByAnotherProcess(t *testing.T) {
	if os.Getenv("KEYGATE_PORT_PICKER") != "" {
		for range 3 { // one more than the range holds
			fmt.Println(FreePort(t))
		}
		return
	}
	p := FreePort(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAPortHandedOutIsNotHandedOutByAnotherProcess$")
	cmd.Env = append(os.Environ(), "KEYGATE_PORT_PICKER=1",
		fmt.Sprintf("KEYGATE_TEST_PORTS=%d-%d", p, p+1))
	out, _ := cmd.CombinedOutput() // fails when p+1 is taken too, or once both are handed out
	picked := 0
	for _, line := range strings.Fields(string(out)) {
		n, err := strconv.Atoi(line)
		if err != nil {
			continue
		}
		picked++
		if n == p {
			t.Fatalf("another test process was handed port %d, this process's:\n%s", p, out)
		}
	}
	if picked == 0 && !strings.Contains(string(out), "no free loopback port") {
		t.Fatalf("the other process picked no port and did not say why:\n%s", out)
	}
}
