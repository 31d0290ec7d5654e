// Package testsidecar starts the real sidecar binary (target/release/shmpipe-sidecar, or $SHMPIPE_SIDECAR_BIN) on a
// socket in a fresh temp directory, like test/helpers/sidecar.js does for the TS tests.

package testsidecar

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Sidecar is a running sidecar process.
type Sidecar struct {
	Cmd    *exec.Cmd
	Dir    string
	Socket string
	Stderr *lockedBuf
	exited chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Bin is the sidecar binary: $SHMPIPE_SIDECAR_BIN, else target/release/shmpipe-sidecar.
func Bin(t testing.TB) string {
	bin := os.Getenv("SHMPIPE_SIDECAR_BIN")
	if bin == "" {
		bin, _ = filepath.Abs(filepath.Join(repoRoot(), "target", "release", "shmpipe-sidecar"))
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `cargo build --release -p shmpipe-sidecar` (or npm run build) first", bin)
	}
	return bin
}

// Start starts a sidecar and stops it (SIGKILL if need be) when the test ends.
func Start(t testing.TB, env ...string) *Sidecar {
	t.Helper()
	bin := Bin(t)
	dir := t.TempDir()
	s := &Sidecar{Dir: dir, Socket: filepath.Join(dir, "sidecar.sock"), Stderr: &lockedBuf{}, exited: make(chan struct{})}
	s.Cmd = exec.Command(bin)
	s.Cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"SHMPIPE_SOCKET=" + s.Socket,
		"SHMPIPE_LOG=warn",
		"SHMPIPE_SHUTDOWN_GRACE=2",
		"SHMPIPE_ADMIN_ADDR=off",
		"SHMPIPE_STORE=file://" + filepath.Join(dir, "store"),
	}, env...)
	s.Cmd.Stderr = s.Stderr
	if err := s.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.Cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Cmd.Process.Signal(syscall.SIGCONT)
		s.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.Cmd.Process.Kill()
			<-s.exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("the sidecar exited early: %s", s.Stderr)
		default:
		}
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar did not listen within 15 s: %s", s.Stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs the sidecar and waits for it to be gone.
func (s *Sidecar) Kill(t testing.TB) {
	s.Cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed sidecar did not exit")
	}
}

// repoRoot is the repository root: go-lib's parent, found from this source file's directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}
