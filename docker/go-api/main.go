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
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
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
func handleWork(w http.ResponseWriter, r *http.Request) {
	n := 100
	if v := r.URL.Query().Get("work"); v != "" {
		parsed, err := strconv.Atoi(v)
		if err != nil || parsed < 0 || parsed > maxWork {
			http.Error(w, fmt.Sprintf("work must be an integer in [0, %d]", maxWork), http.StatusBadRequest)
			return
		}
		n = parsed
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = fmt.Fprintf(w, "%x\n", spin(n))
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
