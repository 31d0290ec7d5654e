package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shmpipe/shmpipe/go-lib/internal/testsidecar"
)

func cli(t *testing.T, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCommands(t *testing.T) {
	s := testsidecar.Start(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 2<<20+3)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)

	code, out, errOut := cli(t, "--sidecar", s.Socket, "put", "cli/a.bin", src, "--json")
	var put map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &put) != nil || put["key"] != "cli/a.bin" || put["size"] != float64(len(data)) {
		t.Fatalf("put: %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, "--sidecar", s.Socket, "ls", "cli")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "cli/a.bin") {
		t.Fatalf("ls: %d %q", code, out)
	}
	dst := filepath.Join(dir, "dst.bin")
	code, out, _ = cli(t, "get", "cli/a.bin", dst, "--sidecar", s.Socket)
	back, _ := os.ReadFile(dst)
	if code != 0 || !bytes.Equal(back, data) || !strings.Contains(out, "checksum verified") {
		t.Fatalf("get: %d %q", code, out)
	}
	if code, out, _ = cli(t, "--sidecar", s.Socket, "--json", "rm", "cli/a.bin"); code != 0 || strings.TrimSpace(out) != `{"deleted":true,"key":"cli/a.bin"}` {
		t.Fatalf("rm: %d %q", code, out)
	}
	code, _, errOut = cli(t, "--sidecar", s.Socket, "get", "cli/a.bin", dst+"2")
	if code != 1 || !strings.Contains(errOut, "SHMPIPE_E_NOT_FOUND") {
		t.Fatalf("get of a deleted key: %d %q", code, errOut)
	}
	if code, out, _ = cli(t, "--sidecar", s.Socket, "ls", "--json"); code != 0 || out != "" {
		t.Fatalf("ls of an empty store: %d %q", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frob"}, {"put", "k"}, {"--sidecar", "/x", "ls", "a", "b"}, {"--nope"}} {
		if code, _, _ := cli(t, args...); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
	t.Setenv("SHMPIPE_SIDECAR_SOCKET", "")
	if code, _, errOut := cli(t, "ls"); code != 2 || !strings.Contains(errOut, "--sidecar") {
		t.Fatalf("no socket: %d %q", code, errOut)
	}
	if code, _, errOut := cli(t, "--sidecar", "/nonexistent/sock", "ls"); code != 1 || !strings.Contains(errOut, "SHMPIPE_E_DISCONNECTED") {
		t.Fatalf("no sidecar there: %d %q", code, errOut)
	}
}
