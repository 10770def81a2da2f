// Command xds-control is chaoslab's xDS control plane: it serves Envoy its clusters,
// endpoints and routes over ADS (gRPC, state-of-the-world and delta), built on
// go-control-plane's snapshot cache, and records how each change travels to each Envoy.
//
// Each Envoy (its node id) gets its own resources: Envoy's own JSON (the v3 API, each with
// its "@type"), read from the file named by -node NODE=FILE whenever that file changes, or
// replaced whole by PUT /resources?node=NODE. Every resource type of a node keeps its version
// until its content changes, so a change pushes only the types it touched (state of the
// world) or only the resources it touched (delta), and an ACK of a type at a version is the
// ACK of that change.
//
// With -health-interval, the control plane also checks the endpoints named by -check
// NAME=ADDR with a TCP connect; one that fails -health-failures times in a row is withdrawn
// from every node's endpoints whose hostname is NAME (and served again once it answers):
// health-driven failover, as a service registry does it.
//
// Every event (a version set, a response sent to an Envoy, its ACK or NACK, an endpoint's
// health turning) is one JSON line in -events, with wall-clock nanoseconds, so that what
// happened stays on disk even if the control plane is killed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// The types a resource's JSON may name (in "@type" or in a typed_config).
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// maxBody bounds a PUT /resources body.
const maxBody = 8 << 20

// typeNames are the resource types served, by their short names in events.
var typeNames = map[string]string{
	resource.ClusterType:  "clusters",
	resource.EndpointType: "endpoints",
	resource.RouteType:    "routes",
	resource.ListenerType: "listeners",
}

// events appends JSON lines to a file, one per event, under a lock.
type events struct {
	mu  sync.Mutex
	out io.Writer
}

func (e *events) put(kind string, fields map[string]any) {
	fields["event"] = kind
	if _, ok := fields["ns"]; !ok {
		fields["ns"] = time.Now().UnixNano()
	}
	line, err := json.Marshal(fields)
	if err != nil {
		log.Printf("xds-control: event %s: %v", kind, err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.out.Write(append(line, '\n')); err != nil {
		log.Printf("xds-control: writing event: %v", err)
	}
}

// plane holds the desired resources, the endpoints withdrawn by health checks, and the
// version each type is at.
type plane struct {
	mu      sync.Mutex
	cache   cachev3.SnapshotCache
	ev      *events
	version int
	nodes   map[string]*node
	down    map[string]bool // endpoint hostnames withdrawn
}

// node is what one Envoy is served.
type node struct {
	desired   map[string][]proto.Message // by type URL
	typeVer   map[string]string          // the version each type was last changed at
	typeBytes map[string][]byte          // its content then, to tell whether it changed
}

func newPlane(ev *events) *plane {
	return &plane{
		cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil),
		ev:    ev,
		nodes: map[string]*node{},
		down:  map[string]bool{},
	}
}

// parseResources reads {"resources": [...]} of Envoy JSON into messages by type URL.
func parseResources(data []byte) (map[string][]proto.Message, error) {
	var doc struct {
		Resources []json.RawMessage `json:"resources"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a {\"resources\": [...]} document: %w", err)
	}
	out := map[string][]proto.Message{}
	for i, raw := range doc.Resources {
		var a anypb.Any
		if err := protojson.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		if _, ok := typeNames[a.TypeUrl]; !ok {
			return nil, fmt.Errorf("resources[%d]: type %s is not served (clusters, endpoints, routes, listeners)", i, a.TypeUrl)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return nil, fmt.Errorf("resources[%d] (%s): %w", i, typeNames[a.TypeUrl], err)
			}
		}
		out[a.TypeUrl] = append(out[a.TypeUrl], m)
	}
	return out, nil
}

// served is a node's desired resources without the withdrawn endpoints.
func (p *plane) served(n *node) map[string][]types.Resource {
	out := map[string][]types.Resource{}
	for typ := range typeNames {
		for _, m := range n.desired[typ] {
			if cla, ok := m.(*endpoint.ClusterLoadAssignment); ok && len(p.down) > 0 {
				m = p.withoutDown(cla)
			}
			out[typ] = append(out[typ], m)
		}
	}
	return out
}

func (p *plane) withoutDown(cla *endpoint.ClusterLoadAssignment) *endpoint.ClusterLoadAssignment {
	c := proto.Clone(cla).(*endpoint.ClusterLoadAssignment)
	for _, locality := range c.Endpoints {
		kept := locality.LbEndpoints[:0]
		for _, lb := range locality.LbEndpoints {
			if !p.down[lb.GetEndpoint().GetHostname()] {
				kept = append(kept, lb)
			}
		}
		locality.LbEndpoints = kept
	}
	return c
}

// publish sets a new snapshot version of a node where anything it is served changed; `why`
// says what caused it. Call with p.mu held.
func (p *plane) publish(name string, why string) (string, []string, error) {
	n := p.nodes[name]
	served := p.served(n)
	next := strconv.Itoa(p.version + 1)
	changed := []string{}
	snap := &cachev3.Snapshot{}
	for typ, short := range typeNames {
		items := served[typ]
		sort.Slice(items, func(i, j int) bool { return cachev3.GetResourceName(items[i]) < cachev3.GetResourceName(items[j]) })
		var blob []byte
		for _, it := range items {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(it)
			if err != nil {
				return "", nil, err
			}
			blob = append(append(blob, b...), 0)
		}
		ver, ok := n.typeVer[typ]
		if !ok || !bytes.Equal(blob, n.typeBytes[typ]) {
			ver = next
			// a type with nothing in it before or now changes nothing an Envoy runs (and one
			// that does not subscribe to it would never ACK it)
			if ok || len(blob) > 0 {
				changed = append(changed, short)
			}
		}
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(ver, items)
		n.typeVer[typ], n.typeBytes[typ] = ver, blob
	}
	sort.Strings(changed)
	if len(changed) == 0 {
		return "", changed, nil // nothing this Envoy runs changed: no version for it
	}
	p.version++
	p.ev.put("version", map[string]any{
		"node": name, "version": next, "changed": changed, "why": why, "endpoints": endpointsOf(served),
	})
	if err := p.cache.SetSnapshot(context.Background(), name, snap); err != nil {
		return "", nil, err
	}
	return next, changed, nil
}

// endpointsOf lists what a node is served as HOSTNAME=IP:PORT, sorted: the reader of the
// events tells what a version added and removed (and which requests still went to the old).
func endpointsOf(served map[string][]types.Resource) []string {
	out := []string{}
	for _, m := range served[resource.EndpointType] {
		for _, locality := range m.(*endpoint.ClusterLoadAssignment).GetEndpoints() {
			for _, lb := range locality.GetLbEndpoints() {
				e := lb.GetEndpoint()
				sa := e.GetAddress().GetSocketAddress()
				addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
				out = append(out, e.GetHostname()+"="+addr)
			}
		}
	}
	sort.Strings(out)
	return out
}

// set replaces a node's desired resources.
func (p *plane) set(name string, res map[string][]proto.Message, why string) (string, []string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[name]
	if !ok {
		n = &node{typeVer: map[string]string{}, typeBytes: map[string][]byte{}}
		p.nodes[name] = n
	}
	old := n.desired
	n.desired = res
	ver, changed, err := p.publish(name, why)
	if err != nil {
		n.desired = old
	}
	return ver, changed, err
}

// markHealth withdraws or restores an endpoint (by hostname) and publishes every node.
func (p *plane) markHealth(host string, up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down[host] == !up {
		return
	}
	if up {
		delete(p.down, host)
	} else {
		p.down[host] = true
	}
	state := map[bool]string{true: "up", false: "down"}[up]
	p.ev.put("health", map[string]any{"endpoint": host, "state": state})
	names := make([]string, 0, len(p.nodes))
	for name := range p.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, _, err := p.publish(name, "health: "+host+" "+state); err != nil {
			log.Printf("xds-control: publishing %s after %s went %s: %v", name, host, state, err)
		}
	}
}

// checkHealth connects to every checked endpoint each interval; `failures` failed connects
// in a row withdraw it, one success restores it.
func (p *plane) checkHealth(ctx context.Context, checks [][2]string, interval, timeout time.Duration, failures int) {
	fails := make([]int, len(checks))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		results := make([]bool, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.DialTimeout("tcp", c[1], timeout)
				if err == nil {
					conn.Close()
				}
				results[i] = err == nil
			}()
		}
		wg.Wait()
		for i, c := range checks {
			if results[i] {
				fails[i] = 0
				p.markHealth(c[0], true)
			} else if fails[i]++; fails[i] >= failures {
				p.markHealth(c[0], false)
			}
		}
	}
}

// watch reloads a node's file whenever it changes (its size or modification time).
func (p *plane) watch(ctx context.Context, name, path string, every time.Duration) {
	var seen os.FileInfo
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if st, err := os.Stat(path); err == nil && (seen == nil || st.ModTime() != seen.ModTime() || st.Size() != seen.Size()) {
			seen = st
			data, err := os.ReadFile(path)
			if err == nil {
				var res map[string][]proto.Message
				if res, err = parseResources(data); err == nil {
					_, _, err = p.set(name, res, "file")
				}
			}
			if err != nil {
				p.ev.put("refused", map[string]any{"node": name, "file": path, "error": err.Error()})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pairs is a repeatable NAME=VALUE flag.
type pairs [][2]string

func (f *pairs) String() string { return fmt.Sprint(*f) }

func (f *pairs) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" || value == "" {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	*f = append(*f, [2]string{name, value})
	return nil
}

// tracker turns the server's callbacks into events: which node a stream is, each response
// sent (type, version, nonce) and each ACK or NACK of it.
type tracker struct {
	mu    sync.Mutex
	ev    *events
	nodes map[string]string       // by stream
	sent  map[string]sentResponse // by stream/nonce
}

type sentResponse struct {
	typ, version string
}

// Stream ids count separately in the state-of-the-world and the delta server (both start at
// 1, and so do their nonces): every key below is "sotw/ID" or "delta/ID".
func (t *tracker) node(stream string, n *core.Node) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n.GetId() != "" {
		t.nodes[stream] = n.GetId()
	}
	return t.nodes[stream]
}

func (t *tracker) response(stream string, typ, version, nonce string, resources int) {
	node := t.node(stream, nil)
	t.mu.Lock()
	t.sent[stream+"/"+nonce] = sentResponse{typ, version}
	t.mu.Unlock()
	t.ev.put("sent", map[string]any{
		"node": node, "stream": stream, "type": typeNames[typ], "version": version,
		"nonce": nonce, "resources": resources,
	})
}

func (t *tracker) request(stream string, n *core.Node, nonce string, status error) {
	node := t.node(stream, n)
	if nonce == "" {
		return // a subscription, not an answer to a response
	}
	key := stream + "/" + nonce
	t.mu.Lock()
	sent, ok := t.sent[key]
	delete(t.sent, key)
	t.mu.Unlock()
	if !ok {
		return
	}
	fields := map[string]any{"node": node, "stream": stream, "type": typeNames[sent.typ], "version": sent.version, "nonce": nonce}
	if status != nil {
		fields["error"] = status.Error()
		t.ev.put("nack", fields)
		return
	}
	t.ev.put("ack", fields)
}

func (t *tracker) callbacks() serverv3.Callbacks {
	detail := func(d interface{ GetMessage() string }) error {
		if d == nil || d.GetMessage() == "" {
			return nil
		}
		return errors.New(d.GetMessage())
	}
	sotw := func(id int64) string { return fmt.Sprintf("sotw/%d", id) }
	delta := func(id int64) string { return fmt.Sprintf("delta/%d", id) }
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discovery.DiscoveryRequest) error {
			var status error
			if r.ErrorDetail != nil {
				status = detail(r.ErrorDetail)
			}
			t.request(sotw(id), r.GetNode(), r.GetResponseNonce(), status)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, r *discovery.DiscoveryResponse) {
			t.response(sotw(id), r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), len(r.GetResources()))
		},
		StreamDeltaRequestFunc: func(id int64, r *discovery.DeltaDiscoveryRequest) error {
			var status error
			if r.ErrorDetail != nil {
				status = detail(r.ErrorDetail)
			}
			t.request(delta(id), r.GetNode(), r.GetResponseNonce(), status)
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, r *discovery.DeltaDiscoveryResponse) {
			t.response(delta(id), r.GetTypeUrl(), r.GetSystemVersionInfo(), r.GetNonce(), len(r.GetResources())+len(r.GetRemovedResources()))
		},
		StreamClosedFunc: func(id int64, n *core.Node) {
			t.ev.put("closed", map[string]any{"node": t.node(sotw(id), n), "stream": sotw(id)})
		},
		DeltaStreamClosedFunc: func(id int64, n *core.Node) {
			t.ev.put("closed", map[string]any{"node": t.node(delta(id), n), "stream": delta(id)})
		},
	}
}

func main() {
	xdsAddr := flag.String("xds-addr", "127.0.0.1:18000", "ADS (gRPC) listen address")
	httpAddr := flag.String("http-addr", "127.0.0.1:18001", "control API listen address: /healthz, PUT /resources")
	var nodes, checks pairs
	flag.Var(&nodes, "node", "NODE=FILE: the resources of the Envoy with that node id, {\"resources\": [Envoy v3 JSON, each with @type]}, reloaded when the file changes (repeatable)")
	flag.Var(&checks, "check", "NAME=HOST:PORT: an endpoint (its hostname in the resources) and where to check it (repeatable)")
	poll := flag.Duration("poll", 50*time.Millisecond, "how often the node files are looked at")
	eventsPath := flag.String("events", "", "where to append the events (JSON lines); stderr if empty")
	healthInterval := flag.Duration("health-interval", 0, "check every endpoint this often (0: no checks)")
	healthTimeout := flag.Duration("health-timeout", 100*time.Millisecond, "a health check's connect timeout")
	healthFailures := flag.Int("health-failures", 2, "failed checks in a row that withdraw an endpoint")
	flag.Parse()

	var out io.Writer = os.Stderr
	if *eventsPath != "" {
		f, err := os.OpenFile(*eventsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatalf("xds-control: %v", err)
		}
		defer f.Close()
		out = f
	}
	ev := &events{out: out}
	// each life of the control plane numbers its versions from 1: readers tell them apart by this
	ev.put("start", map[string]any{"pid": os.Getpid()})
	p := newPlane(ev)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for _, n := range nodes {
		go p.watch(ctx, n[0], n[1], *poll)
	}
	t := &tracker{ev: ev, nodes: map[string]string{}, sent: map[string]sentResponse{}}
	srv := serverv3.NewServer(ctx, p.cache, t.callbacks())
	gs := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	lis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		log.Fatalf("xds-control: %v", err)
	}
	go func() {
		log.Printf("xds-control: ADS on %s", *xdsAddr)
		if err := gs.Serve(lis); err != nil {
			log.Fatalf("xds-control: %v", err)
		}
	}()
	if *healthInterval > 0 {
		go p.checkHealth(ctx, checks, *healthInterval, *healthTimeout, max(1, *healthFailures))
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/resources", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			http.Error(w, "PUT a {\"resources\": [...]} document", http.StatusMethodNotAllowed)
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		name := r.URL.Query().Get("node")
		if name == "" {
			http.Error(w, "say which Envoy: ?node=NODE", http.StatusBadRequest)
			return
		}
		res, err := parseResources(data)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		why := r.URL.Query().Get("why")
		if why == "" {
			why = "put"
		}
		ver, changed, err := p.set(name, res, why)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"version": ver, "changed": changed})
	})
	api := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		log.Printf("xds-control: control API on http://%s", *httpAddr)
		if err := api.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("xds-control: %v", err)
		}
	}()
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = api.Shutdown(shut)
	gs.Stop()
}
