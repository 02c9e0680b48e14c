package memos

import (
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAsErrorDecodesErrorInfo(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "top_k must be between 1 and 100").WithDetails(&errdetails.ErrorInfo{
		Reason:   "TOP_K_OUT_OF_RANGE",
		Domain:   Domain,
		Metadata: map[string]string{"field": "top_k", "retriable": "false"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := AsError(st.Err())
	if !ok {
		t.Fatal("not decoded")
	}
	if e.Reason != "TOP_K_OUT_OF_RANGE" || e.Domain != Domain || e.Metadata["field"] != "top_k" || e.Retriable {
		t.Fatalf("unexpected %+v", e)
	}
	if _, has := e.Metadata["retriable"]; has {
		t.Fatal("retriable left in metadata")
	}
	if e.CodeName() != "INVALID_ARGUMENT" {
		t.Fatalf("code name %s", e.CodeName())
	}
	var again *Error
	if !errors.As(e, &again) {
		t.Fatal("*Error is not an error")
	}
}

func TestAsErrorWithoutDetailsUsesTheCode(t *testing.T) {
	e, ok := AsError(status.Error(codes.Unavailable, "connection refused"))
	if !ok || e.Reason != "UNAVAILABLE" || !e.Retriable || e.Domain != "" {
		t.Fatalf("unexpected %+v", e)
	}
	if _, ok := AsError(errors.New("plain")); ok {
		t.Fatal("plain error decoded")
	}
	if FromStatusProto(nil) != nil || FromStatusProto(status.New(codes.OK, "").Proto()) != nil {
		t.Fatal("OK status decoded as an error")
	}
}
