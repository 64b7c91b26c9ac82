package servers

import (
	"os"
	"strings"
)

// LoadAverage is the machine's 1, 5 and 15 minute load averages (/proc/loadavg), for the
// benchmarks to print at their start and end: on a shared machine a figure means little
// without the load it was taken under.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
