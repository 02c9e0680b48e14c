// Quickstart for the memos Go client: create two cubes, add one conversation to both, search
// both, then make a call that fails on purpose and decode the google.rpc.Status it returns.
//
//	go run ./examples/quickstart -addr 127.0.0.1:50051
//
// Exits non-zero if anything does not go as described.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/memos-os/memos/clients/go/gen/memos/common/v1"
	gatewayv1 "github.com/memos-os/memos/clients/go/gen/memos/gateway/v1"
	"github.com/memos-os/memos/clients/go/memos"
)

func main() {
	defaultAddr := os.Getenv("MEMOS_GATEWAY_ADDR")
	if defaultAddr == "" {
		defaultAddr = "127.0.0.1:50051"
	}
	addr := flag.String("addr", defaultAddr, "gateway address (host:port); env MEMOS_GATEWAY_ADDR")
	user := flag.String("user", "quickstart-user", "user id the calls are made as")
	suffix := flag.String("suffix", "", "suffix of the cube ids (random when empty)")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline of each call")
	flag.Parse()
	if *suffix == "" {
		*suffix = randomHex(4)
	}
	if err := run(*addr, *user, *suffix, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart failed:", err)
		os.Exit(1)
	}
	fmt.Println("quickstart: ok")
}

func run(addr, user, suffix string, timeout time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	gw := gatewayv1.NewGatewayServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), timeout)
	}

	// 1. Two cubes, owned by the user.
	cubes := []string{"travel-" + suffix, "work-" + suffix}
	for _, id := range cubes {
		ctx, cancel := call()
		resp, err := gw.CreateCube(ctx, &gatewayv1.CreateCubeRequest{
			RequestId: "create-" + id, UserId: user, CubeId: id, Name: "quickstart " + id,
		})
		cancel()
		if err != nil {
			return describe("CreateCube "+id, err)
		}
		fmt.Printf("cube %s owner=%s role=%s\n", resp.GetCube().GetCubeId(), resp.GetCube().GetOwnerId(), resp.GetCube().GetMyRole())
	}

	// 2. One conversation, added to both cubes in one call.
	ctx, cancel := call()
	added, err := gw.AddMemories(ctx, &gatewayv1.AddMemoriesRequest{
		RequestId:       "add-" + suffix,
		UserId:          user,
		WritableCubeIds: cubes,
		Messages: []*commonv1.ChatMessage{
			text(commonv1.Role_ROLE_USER, "I'm going to Shanghai next week. I'll choose 7 Days Inn near the Bund."),
			text(commonv1.Role_ROLE_ASSISTANT, "Noted: 7 Days Inn near the Bund for your Shanghai trip."),
		},
		Mode: gatewayv1.ExtractMode_EXTRACT_MODE_FAST,
	})
	cancel()
	if err != nil {
		return describe("AddMemories", err)
	}
	perCube := map[string]int{}
	for _, m := range added.GetMemories() {
		perCube[m.GetCubeId()]++
	}
	fmt.Printf("added %d memories (%v) mode=%s\n", len(added.GetMemories()), sortedCounts(perCube), added.GetEffectiveMode())
	for _, id := range cubes {
		if perCube[id] == 0 {
			return fmt.Errorf("AddMemories wrote nothing to cube %s", id)
		}
	}

	// 3. Search both cubes: one bucket per cube, plus one merged ranking.
	ctx, cancel = call()
	found, err := gw.SearchMemories(ctx, &gatewayv1.SearchMemoriesRequest{
		UserId: user, ReadableCubeIds: cubes, Query: "Which hotel did I pick in Shanghai?", TopK: 5,
	})
	cancel()
	if err != nil {
		return describe("SearchMemories", err)
	}
	for _, bucket := range found.GetTextMem() {
		if e := memos.FromStatusProto(bucket.GetStatus()); e != nil {
			return fmt.Errorf("cube %s answered with %s: %s", bucket.GetCubeId(), e.Reason, e.Message)
		}
		if len(bucket.GetMemories()) == 0 {
			return fmt.Errorf("cube %s: no hits", bucket.GetCubeId())
		}
		for _, hit := range bucket.GetMemories() {
			fmt.Printf("hit cube=%s score=%.4f memory=%q\n", bucket.GetCubeId(), hit.GetScore(), oneLine(hit.GetItem().GetMemory()))
		}
	}
	if len(found.GetTextMem()) != len(cubes) {
		return fmt.Errorf("expected %d buckets, got %d", len(cubes), len(found.GetTextMem()))
	}
	if top := found.GetRanked(); len(top) > 0 {
		fmt.Printf("best cube=%s memory=%q\n", top[0].GetItem().GetMetadata().GetCubeId(), oneLine(top[0].GetItem().GetMemory()))
	}

	// 4. A bad call on purpose: a cube that does not exist. The error's google.rpc.Status
	// (trailer grpc-status-details-bin) carries an ErrorInfo with a stable reason.
	missing := "no-such-cube-" + suffix
	ctx, cancel = call()
	_, err = gw.SearchMemories(ctx, &gatewayv1.SearchMemoriesRequest{
		UserId: user, ReadableCubeIds: []string{missing}, Query: "anything",
	})
	cancel()
	if err == nil {
		return fmt.Errorf("searching %s succeeded; expected CUBE_NOT_FOUND", missing)
	}
	e, ok := memos.AsError(err)
	if !ok {
		return fmt.Errorf("not a gRPC status: %v", err)
	}
	fmt.Printf("error code=%s reason=%s domain=%s retriable=%t metadata=%v message=%q\n",
		e.CodeName(), e.Reason, e.Domain, e.Retriable, e.Metadata, e.Message)
	if e.Reason != "CUBE_NOT_FOUND" || e.Domain != memos.Domain || e.Metadata["cube_id"] != missing {
		return fmt.Errorf("unexpected error details: %v", e)
	}
	return nil
}

func text(role commonv1.Role, s string) *commonv1.ChatMessage {
	return &commonv1.ChatMessage{
		Role:    role,
		Content: []*commonv1.ContentPart{{Part: &commonv1.ContentPart_Text{Text: &commonv1.TextPart{Text: s}}}},
	}
}

// describe turns a failed call into an error that names its memos reason.
func describe(what string, err error) error {
	if e, ok := memos.AsError(err); ok {
		return fmt.Errorf("%s: %w", what, e)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprint(time.Now().UnixNano())
	}
	return hex.EncodeToString(b)
}
