package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/identity"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/ic"
)

// peerFlags collects repeated --peer PRINCIPAL=URL flags.
type peerFlags map[string]string

func (p peerFlags) String() string { return "" }

func (p peerFlags) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || url == "" {
		return fmt.Errorf("want PRINCIPAL=URL, got %q", v)
	}
	if _, dup := p[name]; dup {
		return fmt.Errorf("%s has a route already", name)
	}
	if _, err := ic.ParsePrincipal(name); err != nil {
		return err
	}
	if err := checkURL(url); err != nil {
		return err
	}
	p[name] = url
	return nil
}

// checkURL accepts the base URL of an endpoint: http or https, a host,
// and neither query nor fragment.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an endpoint URL such as http://127.0.0.1:8080", raw)
	}
	return nil
}

// checkRetryAfter refuses a retry delay the Flow would refuse.
func checkRetryAfter(cmd string, d time.Duration) error {
	if d < asyncflow.MinRetryAfter {
		return usagef("%s: --retry-after %s is below the minimum %s", cmd, d,
			asyncflow.MinRetryAfter)
	}
	return nil
}

// checkListen refuses an empty address, which would listen on every
// interface without saying so.
func checkListen(cmd, addr string) error {
	if addr == "" {
		return usagef("%s: --listen needs an address such as 127.0.0.1:8080", cmd)
	}
	return nil
}

// sendTimeout bounds one submission: no longer than the retry delay, so
// that a peer that accepts connections and never answers does not hold
// the only attempt for longer than a retry would take.
func sendTimeout(retry time.Duration) time.Duration {
	return min(30*time.Second, retry)
}

// nodeConfig describes one peer: an identity, an endpoint on a listening
// address, and a Flow behind it.
type nodeConfig struct {
	id     identity.Identity
	listen string
	routes map[string]string
	// store keeps the Flow's state; nil selects a memory store that the
	// Flow owns. The node owns a store given here: it closes it after the
	// Flow, and also when startNode fails.
	store asyncflow.Store
	flow  asyncflow.Config
	// wrap, if set, wraps the outgoing transport.
	wrap func(asyncflow.Transport) asyncflow.Transport
	// onReject receives the endpoint's refusals.
	onReject func(asyncflow.Rejection)
	log      *slog.Logger
}

// node is a running peer.
type node struct {
	id     identity.Identity
	flow   *asyncflow.Flow
	store  asyncflow.Store
	server *http.Server
	addr   net.Addr
	served chan error
}

// loadIdentity reads a PEM identity file, naming it in any error.
func loadIdentity(path string) (identity.Identity, error) {
	if path == "" {
		return nil, usagef("--identity is required")
	}
	return ic.LoadIdentity(path)
}

// startNode listens, starts the Flow on cfg.store and serves the
// endpoint. On error it closes cfg.store.
func startNode(cfg nodeConfig) (n *node, err error) {
	defer func() {
		if err != nil && cfg.store != nil {
			err = errors.Join(err, cfg.store.Close())
		}
	}()

	routes, err := ic.NewTransport(cfg.id, ic.TransportConfig{Routes: cfg.routes,
		Logger: cfg.log})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %q: %w", cfg.listen, err)
	}

	var tr asyncflow.Transport = routes
	if cfg.wrap != nil {
		tr = cfg.wrap(routes)
	}
	fc := cfg.flow
	fc.Transport = tr
	fc.Store = cfg.store
	fc.Logger = cfg.log
	flow, err := asyncflow.New(fc)
	if err != nil {
		ln.Close()
		return nil, err
	}
	ep, err := ic.NewEndpoint(cfg.id.Sender(), flow, ic.EndpointConfig{
		OnReject: cfg.onReject, Logger: cfg.log})
	if err != nil {
		ln.Close()
		flow.Close()
		return nil, err
	}

	n = &node{id: cfg.id, flow: flow, store: cfg.store, addr: ln.Addr(),
		served: make(chan error, 1)}
	n.server = &http.Server{Handler: ep, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(cfg.log.Handler(), slog.LevelDebug)}
	go func() { n.served <- n.server.Serve(ln) }()
	return n, nil
}

// url is the base URL peers use to reach this node.
func (n *node) url() string {
	return "http://" + n.addr.String()
}

// close stops serving, then stops the Flow, then closes the store: the
// Flow writes to its store until it has stopped.
func (n *node) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err := n.server.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Connections still open after the grace period are cut.
		err = n.server.Close()
	}
	if serr := <-n.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	err = errors.Join(err, n.flow.Close())
	if n.store != nil {
		err = errors.Join(err, n.store.Close())
	}
	return err
}
