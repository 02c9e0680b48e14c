// Package memos holds the hand-written helpers of the Go client; the generated stubs are in
// gen/memos/<service>/v1 (gatewayv1 is the public API).
package memos

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every error memos reports.
const Domain = "memos.dev"

// Error is a failed call as memos reports it: a gRPC status whose google.rpc.Status details
// (the grpc-status-details-bin trailer) carry one google.rpc.ErrorInfo.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is stable and machine-readable, e.g. CUBE_NOT_FOUND or TOP_K_OUT_OF_RANGE.
	// When the peer sent no ErrorInfo (gRPC's own failures: deadline, unreachable), it is the
	// code's name.
	Reason string
	Domain string
	// Metadata names the offending field or cube; "retriable" is taken out into Retriable.
	Metadata  map[string]string
	Retriable bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("memos: %s (%s): %s", e.Reason, e.CodeName(), e.Message)
}

// CodeName spells the code as google.rpc.Code and the other memos clients do: NOT_FOUND.
func (e *Error) CodeName() string { return codeName(e.Code) }

// AsError turns an error returned by a generated stub into an *Error. It returns false for
// errors that are not gRPC statuses (and for nil).
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var already *Error
	if errors.As(err, &already) {
		return already, true
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	return fromStatus(st), true
}

// FromStatusProto decodes a google.rpc.Status carried inside a response, such as a search
// bucket's CubeMemories.Status; it returns nil when the status is absent or OK.
func FromStatusProto(s *spb.Status) *Error {
	if s == nil || s.GetCode() == int32(codes.OK) {
		return nil
	}
	return fromStatus(status.FromProto(s))
}

func fromStatus(st *status.Status) *Error {
	out := &Error{
		Code:      st.Code(),
		Message:   st.Message(),
		Reason:    codeName(st.Code()),
		Metadata:  map[string]string{},
		Retriable: st.Code() == codes.Unavailable,
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok {
			continue
		}
		if info.GetReason() != "" {
			out.Reason = info.GetReason()
		}
		out.Domain = info.GetDomain()
		for k, v := range info.GetMetadata() {
			if k == "retriable" {
				out.Retriable = v == "true"
				continue
			}
			out.Metadata[k] = v
		}
		break
	}
	return out
}

// codeName spells a code the way google.rpc.Code and the other memos clients do
// (NOT_FOUND, not NotFound).
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL",
		codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}
