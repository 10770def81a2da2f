// Command go-api is chaoslab's demo target: an HTTPS service built on crypto/tls
// and net/http with an endpoint that does a configurable amount of CPU work, the same
// endpoint over plain HTTP, and the same work as a gRPC API (grpc-go, TLS): a unary
// call and a server stream (work.proto), with server reflection.
//
// It has no fault hooks of any kind: chaoslab injects faults from outside, the
// same way it does for any user service.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"chaoslab.dev/go-api/workpb"
)

// maxWork bounds the work a single request may ask for.
const maxWork = 1_000_000

// maxBytes bounds what one request may allocate (alloc) or ask back (size).
const maxBytes = 64 << 20

// scratchSize is the file `read` reads from: made on the first such request, in the
// temporary directory, and unlinked at once (it goes away with the process).
const scratchSize = 64 << 20

var (
	scratchOnce sync.Once
	scratch     *os.File
	scratchErr  error
)

// sink keeps the last allocated piece reachable, so the compiler cannot drop the
// allocations of `alloc`.
var sink atomic.Pointer[[]byte]

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS listen address")
	httpAddr := flag.String("http-addr", "", "plain HTTP listen address (none if empty)")
	grpcAddr := flag.String("grpc-addr", "", "gRPC (TLS) listen address (none if empty)")
	certFile := flag.String("cert", "", "PEM certificate")
	keyFile := flag.String("key", "", "PEM private key")
	flag.Parse()

	if *certFile == "" || *keyFile == "" {
		log.Fatal("go-api: -cert and -key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("go-api: load key pair: %v", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/work", handleWork)

	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: the proxy in front speaks HTTP/1.1 upstream.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}

	var plain *http.Server
	if *httpAddr != "" {
		plain = &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			log.Printf("go-api: listening on http://%s", *httpAddr)
			if err := plain.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Fatalf("go-api: %v", err)
			}
		}()
	}
	var rpc *grpc.Server
	if *grpcAddr != "" {
		lis, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			log.Fatalf("go-api: %v", err)
		}
		creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		rpc = newGRPCServer(grpc.Creds(creds))
		go func() {
			log.Printf("go-api: gRPC listening on %s", *grpcAddr)
			if err := rpc.Serve(lis); err != nil {
				log.Fatalf("go-api: %v", err)
			}
		}()
	}

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-done
		if rpc != nil {
			rpc.Stop()
		}
		if plain != nil {
			_ = plain.Close()
		}
		_ = srv.Close()
	}()

	log.Printf("go-api: listening on https://%s", *addr)
	if err := srv.ListenAndServeTLS("", ""); err != nil && err != http.ErrServerClosed {
		log.Fatalf("go-api: %v", err)
	}
}

// handleWork hashes a 1 KiB block `work` times (default 100) and reports the digest.
// With `alloc=N` it also allocates N bytes of short-lived garbage (in 4 KiB pieces, each
// written to), which gives the garbage collector work in proportion to the load; with
// `size=N` the reply is padded to at least N bytes; with `read=N` it reads N random 4 KiB
// blocks of a 64 MiB scratch file (page cache the service's cgroup holds: under a memory
// limit below it, the kernel reclaims it and the reads go to disk).
func handleWork(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, ok := param(w, q.Get("work"), 100, maxWork, "work")
	if !ok {
		return
	}
	alloc, ok := param(w, q.Get("alloc"), 0, maxBytes, "alloc")
	if !ok {
		return
	}
	size, ok := param(w, q.Get("size"), 0, maxBytes, "size")
	if !ok {
		return
	}
	blocks, ok := param(w, q.Get("read"), 0, scratchSize/4096, "read")
	if !ok {
		return
	}
	allocate(alloc)
	if blocks > 0 {
		if err := readScratch(blocks); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	digest := fmt.Sprintf("%x\n", spin(n))
	_, _ = w.Write([]byte(digest))
	if pad := size - len(digest); pad > 0 {
		_, _ = w.Write(make([]byte, pad))
	}
}

// param reads a non-negative integer query parameter (def when absent); on a bad value it
// answers 400 and returns false.
func param(w http.ResponseWriter, v string, def, max int, name string) (int, bool) {
	if v == "" {
		return def, true
	}
	parsed, err := strconv.Atoi(v)
	if err != nil || parsed < 0 || parsed > max {
		http.Error(w, fmt.Sprintf("%s must be an integer in [0, %d]", name, max), http.StatusBadRequest)
		return 0, false
	}
	return parsed, true
}

// readScratch reads n random 4 KiB blocks of the scratch file, making it first.
func readScratch(n int) error {
	scratchOnce.Do(func() {
		f, err := os.CreateTemp("", "go-api-scratch-")
		if err != nil {
			scratchErr = err
			return
		}
		_ = os.Remove(f.Name())
		block := make([]byte, 1<<20)
		for i := range block {
			block[i] = byte(i)
		}
		for off := 0; off < scratchSize && err == nil; off += len(block) {
			_, err = f.WriteAt(block, int64(off))
		}
		scratch, scratchErr = f, err
	})
	if scratchErr != nil {
		return scratchErr
	}
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		if _, err := scratch.ReadAt(buf, int64(rand.IntN(scratchSize/4096))*4096); err != nil {
			return err
		}
	}
	return nil
}

// allocate makes n bytes of garbage in 4 KiB pieces, touching each page.
func allocate(n int) {
	for n > 0 {
		k := min(n, 4096)
		b := make([]byte, k)
		for i := 0; i < k; i += 512 {
			b[i] = byte(i)
		}
		sink.Store(&b)
		n -= k
	}
}

func spin(n int) [32]byte {
	var block [1024]byte
	sum := sha256.Sum256(block[:])
	for i := 0; i < n; i++ {
		copy(block[:32], sum[:])
		sum = sha256.Sum256(block[:])
	}
	return sum
}

// newGRPCServer serves the Work API and server reflection (grpc.reflection.v1 and
// v1alpha), so a client can list the services and fetch their descriptors without the
// .proto file.
func newGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	srv := grpc.NewServer(opts...)
	workpb.RegisterWorkServer(srv, workServer{})
	reflection.Register(srv)
	return srv
}

// maxMessages bounds the replies of one stream.
const maxMessages = 10_000

// workServer is the gRPC face of /work.
type workServer struct {
	workpb.UnimplementedWorkServer
}

func (workServer) Do(_ context.Context, req *workpb.WorkRequest) (*workpb.WorkReply, error) {
	if req.GetWork() > maxWork {
		return nil, status.Errorf(codes.InvalidArgument, "work must be in [0, %d]", maxWork)
	}
	sum := spin(int(req.GetWork()))
	return &workpb.WorkReply{Digest: sum[:]}, nil
}

func (workServer) Stream(req *workpb.WorkRequest, stream grpc.ServerStreamingServer[workpb.WorkReply]) error {
	if req.GetWork() > maxWork || req.GetMessages() > maxMessages {
		return status.Errorf(codes.InvalidArgument, "work must be in [0, %d], messages in [0, %d]", maxWork, maxMessages)
	}
	for i := uint32(0); i < req.GetMessages(); i++ {
		sum := spin(int(req.GetWork()))
		if err := stream.Send(&workpb.WorkReply{Digest: sum[:], Seq: i}); err != nil {
			return err
		}
	}
	return nil
}
