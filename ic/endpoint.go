package ic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/asyncflow/asyncflow"
	"github.com/aviate-labs/agent-go/principal"
)

// Defaults of EndpointConfig.
const (
	// DefaultMaxBodyBytes leaves room for a payload of the Flow's default
	// limit (2 MiB, the IC's limit on an ingress message), its Candid
	// record and the signed envelope around it, which together take less
	// than 1 KiB more.
	DefaultMaxBodyBytes = asyncflow.DefaultMaxPayload + envelopeRoom
	// DefaultPermittedDrift is the clock difference the IC's HTTP handler
	// allows.
	DefaultPermittedDrift = 30 * time.Second
	// DefaultMaxIngressExpiry is how far ahead the IC lets an ingress
	// expiry be, and what agent-go sets.
	DefaultMaxIngressExpiry = 5 * time.Minute
)

// envelopeRoom is what a body may hold beyond its payload: far more than
// the Candid record and the signed envelope take.
const envelopeRoom = 1 << 20

// payloadLimiter is an Inbound that says how large a payload it accepts,
// as a Flow does.
type payloadLimiter interface {
	MaxPayload() int
}

// maxReasonBytes bounds the reason sent back, logged and reported, so a
// hostile field value is never echoed at length.
const maxReasonBytes = 300

// EndpointConfig configures an Endpoint. The zero value gives the
// defaults.
type EndpointConfig struct {
	// MaxBodyBytes is the largest body accepted; a larger one is refused
	// with 413 without being read further. Default DefaultMaxBodyBytes,
	// or, when the Inbound is a Flow whose MaxPayload is larger than the
	// default, that payload plus the same 1 MiB of room.
	MaxBodyBytes int64
	// PermittedDrift is how much the sender's clock may differ from this
	// one: an ingress expiry is accepted from now - PermittedDrift to
	// now + MaxIngressExpiry + PermittedDrift. Default
	// DefaultPermittedDrift; zero selects it, so the smallest drift that
	// can be set is one nanosecond.
	PermittedDrift time.Duration
	// MaxIngressExpiry is how far ahead an ingress expiry may be, on top of
	// the drift. Default DefaultMaxIngressExpiry, which is what agent-go
	// sets: a sender whose clock runs ahead of this one by up to
	// PermittedDrift gets through.
	MaxIngressExpiry time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// OnReject, if set, is called once for every submission the endpoint
	// refuses itself, before the answer is written. A call the Inbound
	// refuses is answered but not reported here: the Inbound reports it
	// (a Flow through Config.OnReject). It must be safe for concurrent use.
	OnReject func(asyncflow.Rejection)
	// Logger receives every refusal and acceptance at debug level: the
	// endpoint's own refusals all come before the signature is checked,
	// so a flood of them from anyone must not fill an info log. An
	// Inbound logs its own refusals (a Flow at info). Default: discard.
	Logger *slog.Logger
}

// Endpoint is an http.Handler that accepts one-shot calls in the IC's
// signed call format, as agent-go and agent-js submit them, and hands them
// to an asyncflow.Inbound.
//
// It serves POST /api/v2/canister/<self>/call and
// POST /api/v3/canister/<self>/call. It answers 202 Accepted, with an
// empty body, only after the envelope decoded strictly, the signature over
// the request id verified against the sender's self-authenticating key,
// the ingress expiry was within bounds, both canister ids named this
// endpoint, the method was an asyncflow method and Inbound.Deliver
// succeeded. Every other request gets a 4xx or 5xx answer with a one-line
// text/plain reason and is not delivered; the endpoint's own refusals are
// reported to OnReject.
//
// Anonymous callers and sender delegations are refused. An Endpoint is
// safe for concurrent use.
type Endpoint struct {
	self principal.Principal
	in   asyncflow.Inbound
	cfg  EndpointConfig
	log  *slog.Logger
}

var _ http.Handler = (*Endpoint)(nil)

// NewEndpoint returns an Endpoint that accepts calls addressed to self
// and delivers them to in. It refuses, with an error wrapping
// asyncflow.ErrInvalidConfig, an empty or anonymous self, a nil in, a
// negative limit, and a MaxIngressExpiry and PermittedDrift whose sum
// overflows a time.Duration.
func NewEndpoint(
	self principal.Principal, in asyncflow.Inbound, cfg EndpointConfig,
) (*Endpoint, error) {
	if err := asyncflow.CheckPeer(self); err != nil {
		return nil, fmt.Errorf("ic: endpoint principal: %w", err)
	}
	if in == nil {
		return nil, fmt.Errorf("ic: endpoint has no inbound: %w", asyncflow.ErrInvalidConfig)
	}
	if cfg.MaxBodyBytes < 0 || cfg.PermittedDrift < 0 || cfg.MaxIngressExpiry < 0 {
		return nil, fmt.Errorf("ic: endpoint limits must not be negative: %w",
			asyncflow.ErrInvalidConfig)
	}

	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
		if l, ok := in.(payloadLimiter); ok {
			cfg.MaxBodyBytes = max(cfg.MaxBodyBytes, int64(l.MaxPayload())+envelopeRoom)
		}
	}
	if cfg.PermittedDrift == 0 {
		cfg.PermittedDrift = DefaultPermittedDrift
	}
	if cfg.MaxIngressExpiry == 0 {
		cfg.MaxIngressExpiry = DefaultMaxIngressExpiry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxIngressExpiry > math.MaxInt64-cfg.PermittedDrift {
		return nil, fmt.Errorf("ic: endpoint expiry limits %s and %s overflow: %w",
			cfg.MaxIngressExpiry, cfg.PermittedDrift, asyncflow.ErrInvalidConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Endpoint{self: self, in: in, cfg: cfg, log: log}, nil
}

// refusal is why a submission was refused and with which status.
type refusal struct {
	status int
	reason string
	// inbound marks a refusal that came from the Inbound.
	inbound bool
}

func (r *refusal) Error() string { return r.reason }

// refuse makes a refusal with a formatted reason.
func refuse(status int, format string, args ...any) *refusal {
	return &refusal{status: status, reason: fmt.Sprintf(format, args...)}
}

// submission is what the checks learn about one request, step by step.
type submission struct {
	w    http.ResponseWriter
	r    *http.Request
	body []byte
	env  envelope
	c    content
	// decoded is set once the content map decoded: the method is known.
	decoded bool
	// verified is set once the signature verified: the sender is known.
	verified bool
}

// ServeHTTP checks one submission and delivers it, or refuses it.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &submission{w: w, r: r}
	if err := e.accept(s); err != nil {
		e.answerRefusal(s, err)
		return
	}
	e.log.DebugContext(r.Context(), "ic: call accepted",
		slog.String("from", s.c.sender.Encode()),
		slog.String("method", s.c.method))
	w.WriteHeader(http.StatusAccepted)
}

// accept runs every check in order and then delivers; the first failure
// stops it. The cheap checks come before the signature, the only costly
// one.
func (e *Endpoint) accept(s *submission) error {
	checks := []func(*submission) error{
		e.checkHTTPMethod,
		e.checkPath,
		e.readBody,
		e.decode,
		e.checkRequestType,
		e.checkDelegation,
		e.checkAnonymous,
		e.checkExpiry,
		e.checkCanisterID,
		e.checkMethod,
		e.checkSignature,
		e.deliver,
	}
	for _, check := range checks {
		if err := check(s); err != nil {
			return err
		}
	}
	return nil
}

// checkHTTPMethod accepts POST only.
func (e *Endpoint) checkHTTPMethod(s *submission) error {
	if s.r.Method != http.MethodPost {
		s.w.Header().Set("Allow", http.MethodPost)
		return refuse(http.StatusMethodNotAllowed, "method %s is not allowed, use POST",
			s.r.Method)
	}
	return nil
}

// checkPath accepts /api/v2/canister/<self>/call and its v3 twin.
func (e *Endpoint) checkPath(s *submission) error {
	parts := strings.Split(s.r.URL.Path, "/")
	ok := len(parts) == 6 && parts[0] == "" && parts[1] == "api" &&
		(parts[2] == "v2" || parts[2] == "v3") && parts[3] == "canister" &&
		parts[5] == "call"
	if !ok {
		return refuse(http.StatusNotFound, "path %s is not a call endpoint",
			quoteShort(s.r.URL.Path))
	}

	id, err := principal.Decode(parts[4])
	if err != nil {
		return refuse(http.StatusBadRequest, "canister id %s in path is invalid: %v",
			quoteShort(parts[4]), err)
	}
	if !id.Equal(e.self) {
		return refuse(http.StatusBadRequest,
			"canister id %s in path is not this endpoint's %s", id, e.self)
	}
	return nil
}

// readBody reads at most MaxBodyBytes of the body.
func (e *Endpoint) readBody(s *submission) error {
	limit := e.cfg.MaxBodyBytes
	if s.r.ContentLength > limit {
		return refuse(http.StatusRequestEntityTooLarge,
			"body of %d bytes is larger than %d", s.r.ContentLength, limit)
	}

	body, err := io.ReadAll(http.MaxBytesReader(s.w, s.r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return refuse(http.StatusRequestEntityTooLarge, "body is larger than %d bytes", limit)
	}
	if err != nil {
		return refuse(http.StatusBadRequest, "body could not be read: %v", err)
	}
	s.body = body
	return nil
}

// decode decodes the envelope and the content map.
func (e *Endpoint) decode(s *submission) error {
	env, err := decodeEnvelope(s.body)
	if err != nil {
		return refuse(http.StatusBadRequest, "%v", err)
	}
	c, err := decodeContent(env.Content)
	if err != nil {
		return refuse(http.StatusBadRequest, "%v", err)
	}
	s.env, s.c, s.decoded = env, c, true
	return nil
}

// checkRequestType accepts calls only: queries and state reads are not
// served.
func (e *Endpoint) checkRequestType(s *submission) error {
	if s.c.requestType != "call" {
		return refuse(http.StatusBadRequest, "request type %s is not accepted, only \"call\"",
			quoteShort(s.c.requestType))
	}
	return nil
}

// checkDelegation refuses delegated keys: verifying a delegation chain
// (and its canister signatures) is not implemented.
func (e *Endpoint) checkDelegation(s *submission) error {
	if len(s.env.SenderDelegation) != 0 {
		return refuse(http.StatusBadRequest, "sender delegations are not supported")
	}
	return nil
}

// checkAnonymous refuses the anonymous principal: an asyncflow peer must
// be authenticated.
func (e *Endpoint) checkAnonymous(s *submission) error {
	if s.c.sender.IsAnonymous() {
		return refuse(http.StatusForbidden, "anonymous callers are not accepted")
	}
	return nil
}

// checkSignature checks that the sender is the self-authenticating
// principal of sender_pubkey and that sender_sig signs the request id.
func (e *Endpoint) checkSignature(s *submission) error {
	if len(s.env.SenderPubKey) == 0 || len(s.env.SenderSig) == 0 {
		return refuse(http.StatusForbidden, "request is not signed")
	}
	if len(s.env.SenderPubKey) > maxPublicKeyDER {
		return refuse(http.StatusForbidden, "sender public key of %d bytes is too large",
			len(s.env.SenderPubKey))
	}

	keyOwner := principal.NewSelfAuthenticating(s.env.SenderPubKey)
	if !keyOwner.Equal(s.c.sender) {
		return refuse(http.StatusForbidden,
			"sender %s is not the principal %s of the sender public key",
			s.c.sender, keyOwner)
	}

	id, err := requestID(s.c.fields)
	if err != nil {
		return refuse(http.StatusBadRequest, "request id: %v", err)
	}
	if _, err := verifyRequest(s.env.SenderPubKey, id, s.env.SenderSig); err != nil {
		return refuse(http.StatusForbidden, "invalid signature: %v", err)
	}
	s.verified = true
	return nil
}

// checkExpiry accepts an ingress expiry in
// [now - drift, now + max expiry + drift].
func (e *Endpoint) checkExpiry(s *submission) error {
	now := e.cfg.Now()
	latest := now.Add(e.cfg.MaxIngressExpiry + e.cfg.PermittedDrift)
	earliest := now.Add(-e.cfg.PermittedDrift)

	expiry := s.c.ingressExpiry
	if expiry > uint64(latest.UnixNano()) {
		return refuse(http.StatusBadRequest,
			"ingress expiry %s is too far in the future (latest accepted %s)",
			expiryTime(expiry), latest.UTC().Format(time.RFC3339Nano))
	}
	if expiry < uint64(max(earliest.UnixNano(), 0)) {
		return refuse(http.StatusBadRequest, "ingress expiry %s has expired (now %s)",
			expiryTime(expiry), now.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// checkCanisterID accepts a call addressed to this endpoint only.
func (e *Endpoint) checkCanisterID(s *submission) error {
	if !s.c.canisterID.Equal(e.self) {
		return refuse(http.StatusBadRequest,
			"canister id %s in content is not this endpoint's %s", s.c.canisterID, e.self)
	}
	return nil
}

// checkMethod accepts the three asyncflow methods only.
func (e *Endpoint) checkMethod(s *submission) error {
	if asyncflow.IsMethod(s.c.method) {
		return nil
	}
	return refuse(http.StatusBadRequest, "method %s is not an asyncflow method",
		quoteShort(s.c.method))
}

// deliver hands the call to the Inbound and maps its refusal to a
// status: 4xx for a call the Inbound will never take, 503 for one it
// cannot take now, and 500, without the detail, for its own faults.
func (e *Endpoint) deliver(s *submission) error {
	err := e.in.Deliver(s.r.Context(), s.c.sender, s.c.method, s.c.arg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, asyncflow.ErrPayloadTooLarge):
		return inboundRefusal(http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, asyncflow.ErrInvalidCandid), errors.Is(err, asyncflow.ErrInvalidMsgID),
		errors.Is(err, asyncflow.ErrUnknownMethod), errors.Is(err, asyncflow.ErrInvalidPrincipal),
		errors.Is(err, asyncflow.ErrNoRoute), errors.Is(err, asyncflow.ErrNoHandler),
		errors.Is(err, asyncflow.ErrNotPeer), errors.Is(err, asyncflow.ErrOutsideWindow):
		return inboundRefusal(http.StatusBadRequest, "call refused: "+err.Error())
	case errors.Is(err, asyncflow.ErrClosed):
		return inboundRefusal(http.StatusServiceUnavailable, "not accepting calls now")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return inboundRefusal(http.StatusServiceUnavailable, "call not delivered: "+err.Error())
	}

	e.log.ErrorContext(s.r.Context(), "ic: delivering a call failed",
		slog.String("from", s.c.sender.Encode()), slog.String("method", s.c.method),
		slog.String("err", err.Error()))
	return inboundRefusal(http.StatusInternalServerError, "internal error; try again later")
}

// inboundRefusal is a refusal of the Inbound's, which reports its own
// refusals: the endpoint answers it but does not report it again.
func inboundRefusal(status int, reason string) *refusal {
	return &refusal{status: status, reason: reason, inbound: true}
}

// answerRefusal answers a refused submission, and reports and logs it
// unless the Inbound refused it and so reported it already.
func (e *Endpoint) answerRefusal(s *submission, err error) {
	status := http.StatusBadRequest
	var ref *refusal
	if errors.As(err, &ref) {
		status = ref.status
	}
	reason := oneLine(err.Error())

	rejection := asyncflow.Rejection{Reason: reason}
	if s.decoded {
		// A method name is short; a long one is cut, not echoed whole.
		rejection.Method = cutString(s.c.method, maxQuotedBytes)
	}
	if s.verified {
		rejection.From = s.c.sender
	}

	inbound := ref != nil && ref.inbound
	attrs := []slog.Attr{
		slog.Int("status", status),
		slog.String("reason", reason),
		slog.String("remote", s.r.RemoteAddr),
	}
	if s.verified {
		attrs = append(attrs, slog.String("from", s.c.sender.Encode()),
			slog.String("method", rejection.Method))
	}
	e.log.LogAttrs(s.r.Context(), slog.LevelDebug, "ic: call refused", attrs...)

	if e.cfg.OnReject != nil && !inbound {
		e.cfg.OnReject(rejection)
	}

	h := s.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	s.w.WriteHeader(status)
	_, _ = io.WriteString(s.w, reason)
}

// maxQuotedBytes bounds a value quoted in a reason.
const maxQuotedBytes = 64

// quoteShort quotes a value from the request for a reason, cut to
// maxQuotedBytes so the rest of the reason survives.
func quoteShort(v string) string {
	cut := cutString(v, maxQuotedBytes)
	if len(cut) == len(v) {
		return strconv.Quote(v)
	}
	return strconv.Quote(cut) + "..."
}

// cutString returns the longest prefix of v of at most n bytes that does
// not split a UTF-8 sequence.
func cutString(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n]
}

// oneLine turns s into a single printable line of bounded length: control
// characters become spaces and the tail past maxReasonBytes is cut.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxReasonBytes {
		return s
	}
	return cutString(s, maxReasonBytes) + "..."
}
