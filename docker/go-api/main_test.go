package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"chaoslab.dev/go-api/workpb"
)

func TestWorkIsDeterministic(t *testing.T) {
	if spin(10) != spin(10) {
		t.Fatal("spin(10) differs between calls")
	}
	if spin(10) == spin(11) {
		t.Fatal("spin(10) equals spin(11)")
	}
}

func TestWorkRejectsBadInput(t *testing.T) {
	for _, q := range []string{"-1", "abc", "1000001"} {
		rec := httptest.NewRecorder()
		handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work="+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("work=%s: got status %d, want 400", q, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work=5", nil))
	if rec.Code != http.StatusOK || len(rec.Body.String()) != 65 {
		t.Errorf("work=5: got %d %q", rec.Code, rec.Body.String())
	}
}

func TestGRPCWork(t *testing.T) {
	conn := dialTestServer(t)
	client := workpb.NewWorkClient(conn)
	ctx := context.Background()

	reply, err := client.Do(ctx, &workpb.WorkRequest{Work: 10})
	want := spin(10)
	if err != nil || string(reply.GetDigest()) != string(want[:]) {
		t.Fatalf("Do(10): %v, %x", err, reply.GetDigest())
	}
	if _, err := client.Do(ctx, &workpb.WorkRequest{Work: maxWork + 1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Do(too much work): got %v, want InvalidArgument", err)
	}

	stream, err := client.Stream(ctx, &workpb.WorkRequest{Work: 3, Messages: 5})
	if err != nil {
		t.Fatal(err)
	}
	n := uint32(0)
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetSeq() != n {
			t.Fatalf("message %d has seq %d", n, msg.GetSeq())
		}
		n++
	}
	if n != 5 {
		t.Fatalf("stream sent %d messages, want 5", n)
	}
}

// dialTestServer starts the gRPC server main serves (over an in-memory listener) and
// returns a client connection to it; both are closed when the test ends.
func dialTestServer(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := newGRPCServer()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestReflectionDescribesTheWorkAPI(t *testing.T) {
	conn := dialTestServer(t)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stream.CloseSend() }()
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	listed := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	found := false
	for _, s := range listed.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "chaoslab.work.v1.Work"
	}
	if !found {
		t.Fatalf("reflection lists %v, not chaoslab.work.v1.Work", listed.GetListServicesResponse().GetService())
	}
	files := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
			FileContainingSymbol: "chaoslab.work.v1.Work",
		},
	}).GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(files) == 0 {
		t.Fatal("no file descriptor for chaoslab.work.v1.Work")
	}
	var fd descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(files[0], &fd); err != nil || fd.GetName() != "work.proto" {
		t.Fatalf("file descriptor: %v, name %q", err, fd.GetName())
	}
}

func TestAllocAndSize(t *testing.T) {
	for _, q := range []string{"alloc=-1", "alloc=x", "size=67108865"} {
		rec := httptest.NewRecorder()
		handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work=1&"+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: got status %d, want 400", q, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work=1&size=4000", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 4000 {
		t.Errorf("size=4000: got %d, %d bytes", rec.Code, rec.Body.Len())
	}
	// alloc=N allocates about N bytes on the heap per request
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		handleWork(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/work?work=1&alloc=1048576", nil))
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got < 10<<20 {
		t.Errorf("alloc=1 MiB x 10: the heap grew by %d bytes, want at least 10 MiB", got)
	}
}

func TestReadScratch(t *testing.T) {
	rec := httptest.NewRecorder()
	handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work=1&read=16", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("read=16: got %d %q", rec.Code, rec.Body.String())
	}
	if st, err := scratch.Stat(); err != nil || st.Size() != scratchSize {
		t.Errorf("scratch file: %v, %v", st, err)
	}
	rec = httptest.NewRecorder()
	handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?read=16385", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("read=16385: got %d, want 400", rec.Code)
	}
}
