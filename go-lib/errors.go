package shmpipe

import (
	"errors"
	"fmt"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// Code is a stable error code: a wire code of SPEC §8 or one the client raises itself. The
// names are the TypeScript client's (ShmpipeError.code), so logs read the same in every runtime.
type Code string

// Wire codes (SPEC §8): a completion's negative status.
const (
	CodeUnknownOpcode  Code = "SHMPIPE_E_UNKNOWN_OPCODE"
	CodeMalformed      Code = "SHMPIPE_E_MALFORMED"
	CodeInvalidSlot    Code = "SHMPIPE_E_INVALID_SLOT"
	CodeStaleSlot      Code = "SHMPIPE_E_STALE_SLOT"
	CodeOutOfRange     Code = "SHMPIPE_E_OUT_OF_RANGE"
	CodeShuttingDown   Code = "SHMPIPE_E_SHUTTING_DOWN"
	CodeCancelled      Code = "SHMPIPE_E_CANCELLED"
	CodeBusy           Code = "SHMPIPE_E_BUSY"
	CodeNotFound       Code = "SHMPIPE_E_NOT_FOUND"
	CodeStore          Code = "SHMPIPE_E_STORE"
	CodeIntegrity      Code = "SHMPIPE_E_INTEGRITY"
	CodeInternal       Code = "SHMPIPE_E_INTERNAL"
	CodeInvalidHandle  Code = "SHMPIPE_E_INVALID_HANDLE"
	CodeWrongPassword  Code = "SHMPIPE_E_WRONG_PASSWORD"
	CodeNotARepository Code = "SHMPIPE_E_NOT_A_REPOSITORY"
	CodeRepoExists     Code = "SHMPIPE_E_REPO_EXISTS"
	CodeLocked         Code = "SHMPIPE_E_LOCKED"
	CodeRepoVersion    Code = "SHMPIPE_E_REPO_VERSION"
	CodeRepoLimit      Code = "SHMPIPE_E_REPO_LIMIT"
	CodeLockLost       Code = "SHMPIPE_E_LOCK_LOST"
	CodeRefused        Code = "SHMPIPE_E_REFUSED"
)

// Local codes: raised by the client, never on the wire.
const (
	// CodeDisconnected: the sidecar went away (control socket EOF); every pending call fails with it.
	CodeDisconnected Code = "SHMPIPE_E_DISCONNECTED"
	CodeHandshake    Code = "SHMPIPE_E_HANDSHAKE"
	CodeVersion      Code = "SHMPIPE_E_VERSION"
	CodePermission   Code = "SHMPIPE_E_PERMISSION"
	// CodeInvalidArgument: a call's arguments were refused before anything was sent.
	CodeInvalidArgument Code = "SHMPIPE_E_INVALID_ARGUMENT"
	// CodeClosed: the client was closed.
	CodeClosed Code = "SHMPIPE_E_CLOSED"
	// CodeQueueFull: MaxQueued calls already wait for ring space or a slot.
	CodeQueueFull Code = "SHMPIPE_E_QUEUE_FULL"
	// CodeProtocol: the sidecar broke the protocol (ring positions, a malformed completion).
	CodeProtocol Code = "SHMPIPE_E_PROTOCOL"
	// CodeIO: a local file operation (PutFile, GetFile) failed.
	CodeIO Code = "SHMPIPE_E_IO"
	// CodeUnresponsive: requests were pending and the sidecar's heartbeat stopped.
	CodeUnresponsive Code = "SHMPIPE_E_UNRESPONSIVE"
)

// Error is the one error type of the client. Compare codes with errors.Is(err, shmpipe.ErrNotFound)
// (any *Error with only Code set matches by code) or read Code directly.
type Error struct {
	Code Code
	// Status is the completion's status for wire errors, 0 otherwise.
	Status int32
	// Op is the call that failed ("put", "stat", …).
	Op string
	// Msg says what happened; for store failures it includes the sidecar's message.
	Msg string
	// Err is the cause, if any (an errno, context.Canceled, …).
	Err error
}

// Error reads "op: CODE: message: cause", leaving out what is empty.
func (e *Error) Error() string {
	s := string(e.Code)
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error by code when that one carries nothing but a code (the Err* values).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Msg == "" && t.Err == nil && t.Status == 0 && t.Code == e.Code
}

// Values to match with errors.Is.
var (
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrDisconnected    = &Error{Code: CodeDisconnected}
	ErrClosed          = &Error{Code: CodeClosed}
	ErrCancelled       = &Error{Code: CodeCancelled}
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	ErrIntegrity       = &Error{Code: CodeIntegrity}
	ErrOutOfRange      = &Error{Code: CodeOutOfRange}
	ErrBusy            = &Error{Code: CodeBusy}
	ErrProtocol        = &Error{Code: CodeProtocol}
	ErrQueueFull       = &Error{Code: CodeQueueFull}
)

// CodeOf is err's code, or "" when err is not (and does not wrap) an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// errorFromStatus is the error of a failed completion; an unknown status is a protocol error.
func errorFromStatus(status int32, op, detail string) *Error {
	name := protocol.CodeForStatus(status)
	if name == "" {
		return &Error{Code: CodeProtocol, Status: status, Op: op, Msg: fmt.Sprintf("the sidecar returned unknown status %d", status)}
	}
	msg := fmt.Sprintf("status %d", status)
	if detail != "" {
		msg = detail
	}
	return &Error{Code: Code(name), Status: status, Op: op, Msg: msg}
}

func invalidArg(op, format string, a ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Op: op, Msg: fmt.Sprintf(format, a...)}
}
