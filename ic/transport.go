package ic

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// DefaultIngressExpiry is how long a submitted call stays valid, as in
// agent-go.
const DefaultIngressExpiry = 5 * time.Minute

// nonceSize is the size of the random nonce in every call, so that two
// calls with equal content still have distinct request ids.
const nonceSize = 16

// TransportConfig configures a Transport.
type TransportConfig struct {
	// Routes maps a principal, in text form, to the base URL that accepts
	// its calls (an Endpoint of another service, or an IC boundary node).
	Routes map[string]string
	// DefaultURL is used for principals without a route, typically the IC
	// boundary URL for canisters. Empty means no default: such principals
	// cannot be reached.
	DefaultURL string
	// IngressExpiry is how long a submission stays valid. Default
	// DefaultIngressExpiry.
	IngressExpiry time.Duration
	// Logger receives accepted submissions at debug level. Default:
	// discard.
	Logger *slog.Logger
}

// Transport submits one-shot calls in the IC's signed call format through
// agent-go's client, to Go services running an Endpoint or to canisters.
// It implements asyncflow.Transport and asyncflow.Router and is safe for
// concurrent use.
//
// agent-go sends through http.DefaultTransport, which keeps two idle
// connections per host: with many send workers to one peer, most calls
// open a new connection and leave one in TIME_WAIT when done, enough to
// run out of local ports under sustained load. A process that sends that
// much raises http.DefaultTransport's MaxIdleConnsPerHost to its number
// of send workers.
type Transport struct {
	id     identity.Identity
	sender principal.Principal
	expiry time.Duration
	log    *slog.Logger

	// fallback is the route of principals without one of their own, if
	// a DefaultURL was given.
	fallback *route

	mu     sync.RWMutex
	routes map[string]*route // by the principal's raw bytes
}

// route is where calls to a principal go, and the client that takes them.
// agent-go's client takes no http.RoundTripper and uses
// http.DefaultTransport, so a submission over a kept-alive connection that
// the peer has closed fails, and waits for the protocol's retry.
type route struct {
	url    *url.URL
	client agent.Client
}

func newRoute(u *url.URL) *route {
	return &route{url: u, client: agent.NewClient(agent.ClientConfig{Host: u})}
}

var (
	_ asyncflow.Transport = (*Transport)(nil)
	_ asyncflow.Router    = (*Transport)(nil)
)

// NewTransport returns a Transport that signs with id. It refuses, with an
// error wrapping asyncflow.ErrInvalidConfig, a nil or anonymous identity,
// a negative expiry, a route whose principal or URL is invalid, and a
// URL that is not absolute http or https.
func NewTransport(id identity.Identity, cfg TransportConfig) (*Transport, error) {
	if id == nil || len(id.PublicKey()) == 0 {
		return nil, fmt.Errorf("ic: transport needs an identity that signs: %w",
			asyncflow.ErrInvalidConfig)
	}
	if cfg.IngressExpiry < 0 {
		return nil, fmt.Errorf("ic: ingress expiry %s is negative: %w",
			cfg.IngressExpiry, asyncflow.ErrInvalidConfig)
	}

	t := &Transport{
		id:     id,
		sender: id.Sender(),
		expiry: cmp.Or(cfg.IngressExpiry, DefaultIngressExpiry),
		log:    cfg.Logger,
		routes: make(map[string]*route, len(cfg.Routes)),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}

	if cfg.DefaultURL != "" {
		u, err := parseBaseURL(cfg.DefaultURL)
		if err != nil {
			return nil, fmt.Errorf("ic: default url: %w", err)
		}
		t.fallback = newRoute(u)
	}

	for text, rawURL := range cfg.Routes {
		p, err := ParsePrincipal(text)
		if err != nil {
			return nil, fmt.Errorf("ic: route: %w: %w", err, asyncflow.ErrInvalidConfig)
		}
		if err := t.AddRoute(p, rawURL); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// AddRoute sends calls to p to the base URL rawURL from now on, replacing
// any earlier route of p. It is safe for concurrent use with Send.
func (t *Transport) AddRoute(p principal.Principal, rawURL string) error {
	if err := asyncflow.CheckPeer(p); err != nil {
		return fmt.Errorf("ic: route principal: %w", err)
	}
	u, err := parseBaseURL(rawURL)
	if err != nil {
		return fmt.Errorf("ic: route to %s: %w", p, err)
	}

	r := newRoute(u)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.routes[string(p.Raw)] = r
	return nil
}

// Route reports whether calls to to can be sent: it returns an error
// wrapping asyncflow.ErrNoRoute, naming to, when to has no route and there
// is no default URL.
func (t *Transport) Route(to principal.Principal) error {
	_, err := t.routeOf(to)
	return err
}

// Send signs a call of method with argument arg to the principal to and
// submits it. It returns nil once the endpoint answered 202 Accepted, an
// error wrapping *RefusedError when it refused the call, or another error
// when it could not be reached or ctx ended first. It never waits for the
// call to run: a nil error does not mean the call arrived. Safe for
// concurrent use.
func (t *Transport) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	r, err := t.routeOf(to)
	if err != nil {
		return err
	}

	// agent-go v0.6.1 leaves an empty arg out of the request id but not
	// out of the content, so no receiver could verify such a call. A
	// Candid argument is never empty.
	if len(arg) == 0 {
		return fmt.Errorf("ic: empty argument for %s to %s: %w",
			method, to, asyncflow.ErrInvalidCandid)
	}

	data, err := t.envelope(to, method, arg)
	if err != nil {
		return fmt.Errorf("ic: sign %s to %s: %w", method, to, err)
	}

	if _, err := r.client.Call(ctx, to, data); err != nil {
		return submitError(to, method, err)
	}
	if t.log.Enabled(ctx, slog.LevelDebug) {
		t.log.DebugContext(ctx, "ic: call submitted", slog.String("to", to.Encode()),
			slog.String("method", method), slog.String("url", r.url.String()))
	}
	return nil
}

// routeOf finds where calls to to go.
func (t *Transport) routeOf(to principal.Principal) (*route, error) {
	t.mu.RLock()
	r, ok := t.routes[string(to.Raw)]
	t.mu.RUnlock()
	if ok {
		return r, nil
	}
	if t.fallback != nil {
		return t.fallback, nil
	}
	return nil, fmt.Errorf("ic: %s: %w", to, asyncflow.ErrNoRoute)
}

// envelope builds the signed CBOR envelope of one call.
func (t *Transport) envelope(to principal.Principal, method string, arg []byte) ([]byte, error) {
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}

	req := agent.Request{
		Type:          agent.RequestTypeCall,
		Sender:        t.sender,
		CanisterID:    to,
		MethodName:    method,
		Arguments:     arg,
		IngressExpiry: uint64(time.Now().Add(t.expiry).UnixNano()),
		Nonce:         nonce,
	}
	id := agent.NewRequestID(req)

	return cbor.Marshal(agent.Envelope{
		Content:      req,
		SenderPubKey: t.id.PublicKey(),
		SenderSig:    id.Sign(t.id),
	})
}

// RefusedError reports a call that the endpoint answered with a refusal
// rather than 202 Accepted.
type RefusedError struct {
	// To and Method identify the call.
	To     principal.Principal
	Method string
	// Status is the HTTP status of the answer.
	Status int
	// Reason is the first line of the endpoint's explanation.
	Reason string
}

// Error describes the refusal in one line.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("ic: %s refused %s: status %d: %s", e.To, e.Method, e.Status, e.Reason)
}

// submitError turns an error of agent-go's Client.Call into a
// RefusedError when the endpoint answered, and wraps it otherwise.
//
// agent-go v0.6.1 reports an answer only as text, "(<status>) <status
// text>: <body>", or "(<reject code>) <message>: <error code>" for a
// reject inside a 200 answer, so the text is parsed here.
func submitError(to principal.Principal, method string, err error) error {
	var netErr *url.Error
	if errors.As(err, &netErr) {
		return fmt.Errorf("ic: send %s to %s: %w", method, to, err)
	}

	msg := err.Error()
	codeText, rest, ok := strings.Cut(strings.TrimPrefix(msg, "("), ") ")
	code, convErr := strconv.Atoi(codeText)
	if !strings.HasPrefix(msg, "(") || !ok || convErr != nil {
		return fmt.Errorf("ic: send %s to %s: %w", method, to, err)
	}

	refused := &RefusedError{To: to, Method: method, Status: code}
	if code < 100 {
		// A reject code inside a 200 answer.
		refused.Status = 200
		rest = "reject code " + codeText + ": " + rest
	} else if _, body, ok := strings.Cut(rest, ": "); ok {
		rest = body
	}
	line, _, _ := strings.Cut(rest, "\n")
	refused.Reason = oneLine(strings.TrimSpace(line))
	return refused
}

// parseBaseURL checks that raw is an absolute http or https URL.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %v: %w", raw, err, asyncflow.ErrInvalidConfig)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q is not an absolute http or https url: %w",
			raw, asyncflow.ErrInvalidConfig)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("url %q has a query or fragment: %w",
			raw, asyncflow.ErrInvalidConfig)
	}
	return u, nil
}
