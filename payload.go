package keygate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Step 4 of the request path: the email policy of send routes.

// readSend reads a send request's body, hands it back to the request byte
// for byte for the upstream (as a sendBody the caller must release when the
// handler chain is done; nil when none was read), and reads what it asks
// the provider to send. A request of SES's v1 API (mailapi's Query API, as
// the caller found with QueryRequest) is read from its query string and,
// when posted or when it has one, its body.
func (h *Handler) readSend(r *http.Request, query bool) (*sendBody, mailapi.Message, denial) {
	// A Query API request with another method is read from its query
	// string, and from its body when it has one: Rack reads a form body
	// whatever the method, and Rails' params take its Action over the
	// query's, so GET /?Action=GetSendQuota with Action=SendEmail in its
	// body is a send there.
	if query && !strings.EqualFold(r.Method, http.MethodPost) && r.ContentLength == 0 {
		msg, err := h.dialect.InspectQuery(r.URL.RawQuery, false, "", nil)
		return nil, msg, h.payloadError(err)
	}
	if r.ContentLength > h.maxBody {
		return nil, mailapi.Message{}, h.tooLarge()
	}
	if ce := contentCoding(r.Header); ce != "" {
		// Read as it is, it would be refused as malformed JSON or form.
		return nil, mailapi.Message{}, denial{code: InvalidPayload, message: "the request body is sent with Content-Encoding " +
			strconv.Quote(ce) + ", which this gateway does not read; send it uncompressed"}
	}
	if len(r.Header["Content-Type"]) > 1 {
		// keygate reads the first; a provider that reads the last (a
		// multipart boundary of its own) would send what was not checked.
		return nil, mailapi.Message{}, denial{code: InvalidPayload, message: "the request has more than one Content-Type header; send one"}
	}
	// A refusal leaves the client's body open: the client may still be
	// sending it (asked to by the 100 Continue the first read sent), and
	// the denial reads what is left of it first (deny). Closed, Go's
	// server reads 256 KB more and then closes the connection on the rest,
	// a reset in place of the answer.
	sb, err := readBody(r, h.maxBody)
	if err != nil {
		d := bodyError(r, err)
		d.bodyAsked = err != errBodiesFullUnread
		return nil, mailapi.Message{}, d
	}
	body := sb.bytes()
	if int64(len(body)) > h.maxBody {
		sb.finish()
		d := h.tooLarge()
		d.bodyAsked = true
		return nil, mailapi.Message{}, d
	}
	r.Body.Close()
	r.Body = sb
	r.ContentLength = int64(len(body))
	// The whole body is here: the provider gets it with its length and at
	// once, not chunked as the client may have sent it, nor after asking
	// for a 100 Continue of its own (which would reach the client as a
	// second one).
	r.TransferEncoding = nil
	r.Header.Del("Expect")
	// Nor with trailers (ServeHTTP dropped the declared ones; these are
	// any the body's end would have set), which Caddy passes on chunked.
	r.Trailer = nil
	var msg mailapi.Message
	if query {
		msg, err = h.dialect.InspectQuery(r.URL.RawQuery, true, r.Header.Get("Content-Type"), body)
	} else {
		msg, err = h.dialect.Inspect(r.URL.Path, r.Header.Get("Content-Type"), body)
	}
	return sb, msg, h.payloadError(err)
}

// contentCoding returns the first content coding other than identity that
// the request's Content-Encoding headers name, or "" for none. Every header
// counts, and every coding each one lists: a provider that inflates the
// body may read the second of "Content-Encoding: identity" and
// "Content-Encoding: gzip", and a gzip header's file name can hold a form
// (&from=…&) that keygate would read in place of the inflated body.
func contentCoding(h http.Header) string {
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return c
			}
		}
	}
	return ""
}

// tooLarge is the denial of a send larger than max_body, saying the limit
// and how to raise it: providers take 15-40 MB, the default is 10 MiB.
func (h *Handler) tooLarge() denial {
	size := humanize.Bytes(uint64(h.maxBody))
	if h.maxBody%(1<<20) == 0 {
		size = humanize.IBytes(uint64(h.maxBody))
	}
	return denial{code: PayloadTooLarge, message: "the request body is larger than this route inspects (max_body " + size +
		"); the gateway's operator can raise max_body in its Caddyfile"}
}

// bodyError is the denial of a send whose body readBody could not read.
// Said without the error's own text, which may name addresses.
func bodyError(r *http.Request, err error) denial {
	const unread = "the request body could not be read"
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		// A limit before keygate's own (Caddy's request_body max_size).
		return denial{code: PayloadTooLarge}
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The server's read timeout (Caddy's read_body). net/http ends
		// the request's context on it too, but the client is still
		// there, and reads this.
		return denial{code: InvalidPayload, message: unread + ": reading it timed out"}
	case r.Context().Err() != nil:
		// Gone while it waited for room or sent its body (its connection
		// closed, an HTTP/2 stream reset, a server shutting down): not
		// the gateway's refusal, nor a bad payload.
		return denial{code: ClientClosed}
	case errors.Is(err, errBodiesFull):
		return denial{code: GatewayBusy, retryAfter: time.Second}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return denial{code: InvalidPayload, message: unread + ": it ended before its Content-Length"}
	case errors.Is(err, errBodyTooLong):
		return denial{code: InvalidPayload, message: unread + ": it is longer than its Content-Length"}
	}
	return denial{code: InvalidPayload, message: unread}
}

// payloadError is the denial of a body the dialect could not read.
func (h *Handler) payloadError(err error) denial {
	if err == nil {
		return denial{}
	}
	return denial{code: InvalidPayload, message: h.dialect.Name + " payload: " + err.Error()}
}

// checkMessage applies the key's sender and recipient rules to a send.
func (h *Handler) checkMessage(r *http.Request, rec *store.Record, msg *mailapi.Message) (int, denial) {
	// A body keygate cannot read fully (raw MIME, senders by id) could hide
	// senders or recipients, so keys with any limit on them may not send one.
	restricted := len(rec.SenderDomains) > 0 || rec.MaxRecipients > 0 || rec.Quota != nil || h.quota != nil
	if msg.Opaque && restricted && msg.Unread != "" {
		return 0, denial{code: InvalidPayload, message: "a request of " + msg.Unread + ", is refused for keys with sender, recipient or quota limits"}
	}
	if msg.Opaque && restricted {
		return 0, denial{code: InvalidPayload, message: "senders or recipients keygate cannot read (raw MIME it cannot parse, a sender by id or template) are refused for keys with sender, recipient or quota limits"}
	}
	// Form APIs (Mailgun) may read fields from the query string as well as
	// the body; keygate reads the body only (but both of SES's v1 API).
	if restricted && r.URL.RawQuery != "" && mailapi.FormContentType(r.Header.Get("Content-Type")) &&
		!h.queryRequest(r) {
		return 0, denial{code: InvalidPayload, message: "query parameters on a form send are refused for keys with sender, recipient or quota limits"}
	}
	// A JSON send said to be a form: keygate reads the JSON, but a provider
	// whose framework binds a body by its Content-Type (ASP.NET's model
	// binding, Rails' params) reads the form, and
	// {"x":"&From=ceo%40other.example&y=","From":"a@shop.example"} is both,
	// with other senders. No SDK sends one.
	if restricted && mailapi.FormContentType(r.Header.Get("Content-Type")) && !h.dialect.FormSend(r.URL.Path) &&
		!h.queryRequest(r) {
		return 0, denial{code: InvalidPayload, message: "a JSON send with a form Content-Type is refused for keys with sender, recipient or quota limits; send Content-Type: application/json"}
	}
	if len(rec.SenderDomains) > 0 {
		for _, s := range msg.Senders {
			if !mailapi.SenderAllowed(s, rec.SenderDomains) {
				// The domain, so the sender at fault is found in a batch of
				// hundreds; the client's own text, a key's secret cut.
				domain := s[strings.LastIndexByte(s, '@')+1:]
				if len(domain) > 100 {
					domain = domain[:100] + "…"
				}
				return 0, denial{code: SenderNotAllowed, message: "the sender domain " + strconv.Quote(verifier.Redact(domain)) +
					" is outside the API key's sender domains"}
			}
		}
		for _, d := range msg.SendingDomains {
			if !mailapi.DomainAllowed(d, rec.SenderDomains) {
				return 0, denial{code: SenderNotAllowed, message: "the sending domain in the path is outside the API key's sender domains"}
			}
		}
	}
	if rec.MaxRecipients > 0 && msg.Recipients > rec.MaxRecipients {
		return 0, denial{code: TooManyRecipients, message: fmt.Sprintf("the message has %d recipients; this API key allows %d per request", msg.Recipients, rec.MaxRecipients)}
	}
	return msg.Recipients, denial{}
}

// readBody reads the body into a pooled buffer: at most limit+1 bytes, or
// exactly the declared Content-Length (a body that ends early, or goes on
// past it, is an error).
//
// The buffer grows as the bytes arrive. A declared length reserves at most
// presize up front; past that the buffer grows eightfold each time it
// fills, up to the declared length or limit+1. So a client that declares
// 10 MB and sends a few bytes holds 32 KB, not 10 MB, and a body never holds
// more than eight times what it sent; a 200 KB body is copied once, 32 KB.
func readBody(r *http.Request, limit int64) (*sendBody, error) {
	declared := r.ContentLength
	if declared > limit {
		declared = -1 // read limit+1 bytes: the caller answers payload_too_large
	}
	most := limit + 1
	if declared >= 0 {
		most = declared
	}
	sb := newSendBody(int(min(most, presize)))
	if !sb.hold(r.Context()) {
		sb.finish()
		return nil, errBodiesFullUnread
	}
	n := 0
	for {
		m, err := io.ReadFull(r.Body, sb.buf[n:])
		n += m
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if declared >= 0 {
				sb.finish()
				return nil, io.ErrUnexpectedEOF
			}
			sb.buf = sb.buf[:n]
			break
		}
		if err != nil {
			sb.finish()
			return nil, err
		}
		if int64(n) == most {
			if declared >= 0 {
				// A body longer than declared is cut by net/http; read one
				// more byte anyway so nothing is silently dropped.
				var one [1]byte
				if m, _ := r.Body.Read(one[:]); m > 0 {
					sb.finish()
					return nil, errBodyTooLong
				}
			}
			break
		}
		sb.grow(int(min(most, 8*int64(n))))
		if !sb.hold(r.Context()) {
			sb.finish()
			return nil, errBodiesFull
		}
	}
	sb.reader.Reset(sb.buf)
	return sb, nil
}

// presize is the most of a declared Content-Length readBody reserves before
// the bytes arrive: every send of a few recipients and a text or HTML part
// fits.
const presize = 32 << 10

// sendBody is a send request's body after inspection, read again by the
// next handler (reverse_proxy sends it upstream). Its buffer is reused by a
// later request once nothing can read it any more: when the handler chain
// has returned (release) and the reader is done with it, having read it to
// the end or closed it. The order of the two varies: the transport that
// sends the body may read it and close it after reverse_proxy has returned.
// A body left partly read and never closed (reverse_proxy does not close one
// it never read, e.g. when the upstream could not be dialled) is left to the
// garbage collector, never reused.
type sendBody struct {
	mu     sync.Mutex
	reader bytes.Reader
	closed bool
	done   bool // the reader let go of buf: read to the end, or closed
	buf    []byte
	pooled *bodyPool    // where buf goes back to; nil when not pooled
	whole  *[]byte      // buf's whole pooled array, as the pool holds it
	refs   atomic.Int32 // the handler's and the reader's
	held   atomic.Int64 // bytes taken from bodies, until the handler is done

	// readOut is set once a reader has had the body's last byte: until
	// then the upstream cannot have the whole request (mayHaveSent).
	readOut atomic.Bool

	// The key's check before a retry's attempt (forward), and its
	// refusal, which ends the body's reading.
	keyCheck
	refusal
}

// bodies bounds the memory every send body held at once may take, across
// the process: without a bound, clients with a valid key that send large
// bodies at once could hold max_body each until Caddy runs out of memory.
// A body takes its buffer's size as it grows, and the handler gives it back
// when the chain is done with the request. A body that finds no room waits
// for bodies before it to be done (its client's upload pauses meanwhile),
// up to bodyWait; then it gets 503 gateway_busy, which SDKs retry.
var bodies bodyBudget

// bodyWait is the longest a send body waits for room among bodies.
var bodyWait = 10 * time.Second

// errBodyTooLong is readBody's error for a body that goes on past its
// Content-Length.
var errBodyTooLong = errors.New("the body is longer than its Content-Length")

// errBodiesFull is readBody's error when bodies had no room for the body;
// errBodiesFullUnread when that was before any of it was read, so a client
// that asked for 100 Continue has not been told to send it.
var (
	errBodiesFull       = errors.New("the gateway holds as many send bodies as it may")
	errBodiesFullUnread = fmt.Errorf("%w (none of the body read)", errBodiesFull)
)

// bodyBudget counts the bytes send bodies hold against a limit.
type bodyBudget struct {
	used  atomic.Int64
	limit atomic.Int64 // 0 until the first handler is provisioned: no bound

	waiting atomic.Int32 // bodies waiting for room
	mu      sync.Mutex
	freed   chan struct{} // closed when room is given back while bodies wait
}

// take reserves n more bytes for a body that holds own already, or reports
// that they would go past the limit. A body larger than the whole limit (a
// max_body above it) passes when it is the only one held, or it could never
// pass.
func (b *bodyBudget) take(n, own int64) bool {
	limit := b.limit.Load()
	if used := b.used.Add(n); used > limit && limit > 0 && used-n-own > 0 {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes and wakes the bodies waiting for room.
func (b *bodyBudget) give(n int64) {
	b.used.Add(-n)
	if b.waiting.Load() == 0 {
		return
	}
	b.mu.Lock()
	if b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
	b.mu.Unlock()
}

// wait takes n bytes as take does, waiting for room until ctx ends or
// bodyWait passes.
func (b *bodyBudget) wait(ctx context.Context, n, own int64) bool {
	if b.take(n, own) {
		return true
	}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	timer := time.NewTimer(bodyWait)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if b.freed == nil {
			b.freed = make(chan struct{})
		}
		freed := b.freed
		b.mu.Unlock()
		// Room given back before freed was taken woke no one: look again.
		if b.take(n, own) {
			return true
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		}
	}
}

// defaultBodyLimit is the bound on bodies held at once: a quarter of Go's
// memory limit (which Caddy sets from the container's), or 1 GiB without
// one, and never under 64 MiB.
func defaultBodyLimit() int64 {
	limit := int64(1 << 30)
	if m := debug.SetMemoryLimit(-1); m != math.MaxInt64 {
		limit = m / 4
	}
	return max(limit, 64<<20)
}

// hold takes what the body's buffer holds beyond what it already took,
// waiting for room as bodies.wait does.
func (b *sendBody) hold(ctx context.Context) bool {
	own := b.held.Load()
	n := int64(cap(b.buf)) - own
	if n <= 0 {
		return true
	}
	if !bodies.wait(ctx, n, own) {
		return false
	}
	b.held.Add(n)
	return true
}

// finish is the handler's release: it gives back what the body took from
// bodies (the reader may still be sending it upstream, for moments).
func (b *sendBody) finish() {
	if n := b.held.Swap(0); n > 0 {
		bodies.give(n)
	}
	b.release()
}

func (b *sendBody) bytes() []byte { return b.buf }

func (b *sendBody) Read(p []byte) (int, error) {
	if b.d.Load() != nil {
		return 0, errKeyChangedMidBody
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	}
	if b.done {
		b.mu.Unlock()
		return 0, io.EOF
	}
	n, err := b.reader.Read(p)
	last := b.reader.Len() == 0
	if last {
		b.done = true
		b.reader.Reset(nil)
		b.readOut.Store(true)
	}
	b.mu.Unlock()
	if last {
		b.release() // every later Read answers EOF without the buffer
	}
	return n, err
}

// Close ends reading; the buffer goes back once the handler is done too.
func (b *sendBody) Close() error {
	b.mu.Lock()
	b.closed = true
	first := !b.done
	b.done = true
	b.reader.Reset(nil)
	b.mu.Unlock()
	if first {
		b.release()
	}
	return nil
}

// release drops one of the two references; the last returns the buffer.
func (b *sendBody) release() {
	if b.refs.Add(-1) == 0 && b.pooled != nil {
		b.pooled.pool.Put(b.whole)
		b.buf, b.whole = nil, nil
	}
}

// bodyPool keeps body buffers of one size class for reuse.
type bodyPool struct {
	size int
	pool sync.Pool
}

// bodyPools are the size classes of pooled buffers, each twice the one
// before from 32 KB (a body with a declared length takes the class of that
// length: a 40 KB newsletter holds 64 KB, not 256). Larger bodies (up to
// max_body) are allocated per request rather than kept around.
var bodyPools = []*bodyPool{{size: 4 << 10}, {size: 32 << 10}, {size: 64 << 10}, {size: 128 << 10},
	{size: 256 << 10}, {size: 512 << 10}, {size: 1 << 20}}

// newSendBody returns a body of n bytes to read into.
func newSendBody(n int) *sendBody {
	sb := &sendBody{}
	sb.refs.Store(2)
	sb.buf, sb.whole, sb.pooled = bodyBuffer(n)
	return sb
}

// grow moves what the body holds into a buffer of n bytes, returning the old
// one to its pool (nothing else has seen it yet).
func (b *sendBody) grow(n int) {
	buf, whole, pooled := bodyBuffer(n)
	copy(buf, b.buf)
	if b.pooled != nil {
		b.pooled.pool.Put(b.whole)
	}
	b.buf, b.whole, b.pooled = buf, whole, pooled
}

// bodyBuffer returns n bytes from the smallest pool that holds them, with
// the pool's whole array and the pool; or, above the largest class, newly
// allocated ones.
func bodyBuffer(n int) ([]byte, *[]byte, *bodyPool) {
	for _, p := range bodyPools {
		if n <= p.size {
			// The pool holds pointers, so putting one back allocates
			// nothing.
			whole, ok := p.pool.Get().(*[]byte)
			if !ok {
				b := make([]byte, p.size)
				whole = &b
			}
			return (*whole)[:n], whole, p
		}
	}
	return make([]byte, n), nil, nil
}
