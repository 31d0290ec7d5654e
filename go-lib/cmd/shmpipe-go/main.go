// Command shmpipe-go moves objects to and from a shmpipe sidecar's store with the pure-Go client:
//
//	shmpipe-go [--sidecar SOCKET] [--json] put KEY FILE
//	shmpipe-go [--sidecar SOCKET] [--json] get KEY FILE
//	shmpipe-go [--sidecar SOCKET] [--json] ls [PREFIX]
//	shmpipe-go [--sidecar SOCKET] [--json] rm KEY
//
// The socket defaults to $SHMPIPE_SIDECAR_SOCKET. Unlike the `shmpipe` CLI it never starts a
// sidecar of its own: it is the example agent of the Go client. Output and exit codes follow the
// `shmpipe` CLI: --json prints the same objects; 0 ok, 1 error, 2 usage, 130/143 signals.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	shmpipe "github.com/shmpipe/shmpipe/go-lib"
)

const usage = `usage: shmpipe-go [--sidecar SOCKET] [--json] COMMAND ARGS

commands:
  put KEY FILE   upload FILE as the object KEY
  get KEY FILE   download the object KEY into FILE (verified, then renamed into place)
  ls [PREFIX]    list the objects under PREFIX (whole path segments)
  rm KEY         delete the object KEY

options:
  --sidecar SOCKET   the sidecar's control socket [default: $SHMPIPE_SIDECAR_SOCKET]
  --json             one JSON object per line, as the shmpipe CLI prints
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shmpipe-go", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sock := fs.String("sidecar", os.Getenv("SHMPIPE_SIDECAR_SOCKET"), "")
	asJSON := fs.Bool("json", false, "")
	help := fs.Bool("help", false, "")
	// Flags may come before or after the command, as in the shmpipe CLI.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			fmt.Fprintf(stderr, "shmpipe-go: %v\n%s", err, usage)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if *help {
		fmt.Fprint(stdout, usage)
		return 0
	}
	want := map[string][2]int{"put": {2, 2}, "get": {2, 2}, "ls": {0, 1}, "rm": {1, 1}}
	if len(pos) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	n, known := want[pos[0]]
	if !known {
		fmt.Fprintf(stderr, "shmpipe-go: unknown command %q\n%s", pos[0], usage)
		return 2
	}
	if len(pos)-1 < n[0] || len(pos)-1 > n[1] {
		fmt.Fprintf(stderr, "shmpipe-go: %s takes %d to %d arguments\n%s", pos[0], n[0], n[1], usage)
		return 2
	}
	if *sock == "" {
		fmt.Fprintf(stderr, "shmpipe-go: no sidecar: pass --sidecar SOCKET or set SHMPIPE_SIDECAR_SOCKET\n")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	code := func() int {
		c, err := shmpipe.Connect(ctx, shmpipe.Options{SocketPath: *sock, ClientName: "shmpipe-go", SlotCount: 64, SlotSize: 1 << 20})
		if err != nil {
			return fail(stderr, err)
		}
		defer c.Close()
		out := func(v any, text string) {
			if *asJSON {
				b, _ := json.Marshal(v)
				fmt.Fprintln(stdout, string(b))
			} else {
				fmt.Fprintln(stdout, text)
			}
		}
		switch pos[0] {
		case "put":
			r, err := c.PutFile(ctx, pos[2], pos[1])
			if err != nil {
				return fail(stderr, err)
			}
			out(map[string]any{"key": pos[1], "size": r.Size, "checksum": r.Checksum},
				fmt.Sprintf("%s: %d bytes, crc32c %08x", pos[1], r.Size, r.Checksum))
		case "get":
			r, err := c.GetFile(ctx, pos[1], pos[2])
			if err != nil {
				return fail(stderr, err)
			}
			note := ""
			if r.Verified {
				note = ", checksum verified"
			}
			out(map[string]any{"key": pos[1], "file": pos[2], "size": r.Size, "verified": r.Verified},
				fmt.Sprintf("%s: %d bytes%s", pos[2], r.Size, note))
		case "ls":
			prefix := ""
			if len(pos) > 1 {
				prefix = pos[1]
			}
			for e, err := range c.List(ctx, prefix, 0) {
				if err != nil {
					return fail(stderr, err)
				}
				out(map[string]any{"key": e.Key, "size": e.Size, "mtimeMs": e.MtimeMs},
					fmt.Sprintf("%12d  %s  %s", e.Size, time.UnixMilli(int64(e.MtimeMs)).UTC().Format("2006-01-02T15:04:05.000Z"), e.Key))
			}
		case "rm":
			if err := c.Delete(ctx, pos[1]); err != nil {
				return fail(stderr, err)
			}
			out(map[string]any{"key": pos[1], "deleted": true}, "deleted "+pos[1])
		}
		return 0
	}()
	if ctx.Err() != nil {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM {
				return 143
			}
		default:
		}
		return 130
	}
	return code
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "shmpipe-go: %v\n", err)
	if shmpipe.CodeOf(err) == shmpipe.CodeInvalidArgument {
		return 2
	}
	return 1
}
