// Command go-api is chaoslab's demo target: an HTTPS service built on crypto/tls
// and net/http with an endpoint that does a configurable amount of CPU work.
//
// It has no fault hooks of any kind: chaoslab injects faults from outside, the
// same way it does for any user service.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// maxWork bounds the work a single request may ask for.
const maxWork = 1_000_000

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
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

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-done
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
