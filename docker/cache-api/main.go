// Command cache-api is chaoslab's example of a service with a dependency: an HTTPS (and
// plain HTTP) API in front of a Redis hash cache. Each request to /item?id=N writes the
// item's fields with HSET and reads them back with HMGET (go-redis), then answers with
// them: every request costs one round trip to Redis per command, so a fault on the link
// to Redis, or on Redis itself, shows in every request.
//
// Like go-api it has no fault hooks: chaoslab acts on it from outside.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxFields bounds the fields one request may write.
const maxFields = 1000

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS listen address")
	httpAddr := flag.String("http-addr", "", "plain HTTP listen address (none if empty)")
	certFile := flag.String("cert", "", "PEM certificate")
	keyFile := flag.String("key", "", "PEM private key")
	redisAddr := flag.String("redis", envOr("REDIS_ADDR", "127.0.0.1:6379"), "Redis address (host:port); $REDIS_ADDR")
	timeout := flag.Duration("redis-timeout", 2*time.Second, "timeout of one Redis command")
	flag.Parse()

	if *certFile == "" || *keyFile == "" {
		log.Fatal("cache-api: -cert and -key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("cache-api: load key pair: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:         *redisAddr,
		DialTimeout:  *timeout,
		ReadTimeout:  *timeout,
		WriteTimeout: *timeout,
		PoolSize:     32,
	})
	defer rdb.Close()

	api := &cacheAPI{rdb: rdb}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", api.health)
	mux.HandleFunc("/item", api.item)

	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	var plain *http.Server
	if *httpAddr != "" {
		plain = &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			log.Printf("cache-api: listening on http://%s", *httpAddr)
			if err := plain.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("cache-api: %v", err)
			}
		}()
	}
	go func() {
		log.Printf("cache-api: listening on https://%s, cache at %s", *addr, *redisAddr)
		if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("cache-api: %v", err)
		}
	}()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if plain != nil {
		_ = plain.Shutdown(ctx)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

type cacheAPI struct {
	rdb *redis.Client
}

// health answers 200 when Redis answers a PING, 503 otherwise.
func (a *cacheAPI) health(w http.ResponseWriter, r *http.Request) {
	if err := a.rdb.Ping(r.Context()).Err(); err != nil {
		http.Error(w, "cache: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// item writes `fields` fields of item `id` (HSET) and reads them back (HMGET).
func (a *cacheAPI) item(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("id")
	if id == "" {
		id = "1"
	}
	fields, err := strconv.Atoi(q.Get("fields"))
	if err != nil || fields < 1 {
		fields = 4
	}
	if fields > maxFields {
		http.Error(w, fmt.Sprintf("fields must be at most %d", maxFields), http.StatusBadRequest)
		return
	}
	key := "item:" + id
	values := make([]any, 0, 2*fields)
	names := make([]string, 0, fields)
	for i := 0; i < fields; i++ {
		name := "f" + strconv.Itoa(i)
		names = append(names, name)
		values = append(values, name, strconv.FormatInt(time.Now().UnixNano(), 10))
	}
	ctx := r.Context()
	if err := a.rdb.HSet(ctx, key, values...).Err(); err != nil {
		http.Error(w, "cache write: "+err.Error(), http.StatusBadGateway)
		return
	}
	got, err := a.rdb.HMGet(ctx, key, names...).Result()
	if err != nil {
		http.Error(w, "cache read: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "fields": len(got)})
}
