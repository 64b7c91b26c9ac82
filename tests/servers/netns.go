package servers

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Knative's components find each other by Service names (`*.svc.cluster.local`) on port 80,
// and several of them bind fixed ports (health probes on :8080). Here they run as processes
// on this machine, contained:
//
//   - every component runs in its own mount namespace, with a private /etc/hosts bind-mounted
//     over the host's (which is never touched): each Service name resolves to a loopback
//     address of its own (127.x.y.n), where this process forwards port 80 to the component;
//   - a component with fixed ports also runs in its own network namespace (only its own lo):
//     this process listens inside that namespace on the addresses the component must reach
//     (the API server, the Service addresses, named loopback ports) and forwards them out.
//
// Nothing outside the processes' own namespaces changes, and the namespaces end with them.

// containedCommand returns the command line that runs bin with args in new namespaces: a
// mount namespace (always) with hosts bind-mounted over /etc/hosts, and a network namespace
// when ownNet. The command waits for the file ready before it execs bin, so that this process
// can set the network namespace up first. unshare and sh exec in turn, so bin keeps the PID
// (and the parent-death signal) of the process started.
func containedCommand(ownNet bool, ready, hosts, bin string, args ...string) (string, []string, error) {
	unshare, err := lookPath("unshare")
	if err != nil {
		return "", nil, err
	}
	flags := []string{"--mount", "--propagation", "private"}
	if ownNet {
		flags = append(flags, "--net")
	}
	script := `while [ ! -e "$1" ]; do sleep 0.02; done; mount --bind "$2" /etc/hosts || exit 1; shift 2; exec "$@"`
	cl := append(flags, "--", "/bin/sh", "-c", script, "sh", ready, hosts, bin)
	return unshare, append(cl, args...), nil
}

func lookPath(name string) (string, error) {
	for _, dir := range []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s (util-linux) is needed to contain Knative's components", name)
}

// netNS is the network namespace of a running process, with a thread of this process inside
// it that creates sockets there.
type netNS struct {
	reqs chan func()
	quit chan struct{}
	once sync.Once
}

// hostNetNS is this process's network namespace, read before any thread entered another:
// /proc/self/ns/net names the main thread's, and a thread of openNetNS may be the main thread.
var hostNetNS, _ = os.Readlink("/proc/self/ns/net")

// openNetNS waits until process pid has a network namespace other than this process's, then
// starts a thread in it and brings its loopback interface up.
func openNetNS(pid int, timeout time.Duration) (*netNS, error) {
	own := hostNetNS
	if own == "" {
		return nil, errors.New("this process's network namespace is unknown")
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	deadline := time.Now().Add(timeout)
	for {
		cur, err := os.Readlink(path)
		if err != nil {
			return nil, fmt.Errorf("process %d: %w", pid, err)
		}
		if cur != own {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process %d did not enter a network namespace of its own", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	n := &netNS{reqs: make(chan func()), quit: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves the namespace by ending with this goroutine.
		runtime.LockOSThread()
		err := unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err == nil {
			err = loopbackUp()
		}
		errc <- err
		if err != nil {
			return
		}
		for {
			select {
			case f := <-n.reqs:
				f()
			case <-n.quit:
				return
			}
		}
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("entering the network namespace of process %d: %w", pid, err)
	}
	return n, nil
}

// loopbackUp brings lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// do runs f on the thread inside the namespace.
func (n *netNS) do(f func()) error {
	done := make(chan struct{})
	select {
	case n.reqs <- func() { f(); close(done) }:
	case <-n.quit:
		return errors.New("network namespace closed")
	}
	<-done
	return nil
}

// Listen listens on addr inside the namespace.
func (n *netNS) Listen(addr string) (l net.Listener, err error) {
	if derr := n.do(func() { l, err = net.Listen("tcp", addr) }); derr != nil {
		return nil, derr
	}
	return l, err
}

// Dial connects to addr inside the namespace.
func (n *netNS) Dial(addr string) (c net.Conn, err error) {
	if derr := n.do(func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) }); derr != nil {
		return nil, derr
	}
	return c, err
}

// Close ends the thread inside the namespace.
func (n *netNS) Close() {
	if n != nil {
		n.once.Do(func() { close(n.quit) })
	}
}

// forwarder accepts connections and copies each, both ways, to a connection dial returns.
type forwarder struct {
	l    net.Listener
	mu   sync.Mutex
	dial func() (net.Conn, error)
}

// forward serves l, dialing with dial (replaceable later with setDial).
func forward(l net.Listener, dial func() (net.Conn, error)) *forwarder {
	f := &forwarder{l: l, dial: dial}
	go f.serve()
	return f
}

func (f *forwarder) setDial(dial func() (net.Conn, error)) {
	f.mu.Lock()
	f.dial = dial
	f.mu.Unlock()
}

func (f *forwarder) serve() {
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		dial := f.dial
		f.mu.Unlock()
		go splice(c, dial)
	}
}

func (f *forwarder) Close() { _ = f.l.Close() }

// splice copies c to and from a new connection of dial until both sides are done.
func splice(c net.Conn, dial func() (net.Conn, error)) {
	defer c.Close()
	if dial == nil {
		return
	}
	d, err := dial()
	if err != nil {
		return
	}
	defer d.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(d, c)
		closeWrite(d)
		close(done)
	}()
	_, _ = io.Copy(c, d)
	closeWrite(c)
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = c.Close()
	}
}

// dialHost dials addr from this process's own network namespace.
func dialHost(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
}
