package controller

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Review limits of the metrics endpoint's authentication (docs/install.md, "Hardened install").
const (
	// reviewTimeout bounds one TokenReview plus SubjectAccessReview.
	reviewTimeout = 5 * time.Second
	// allowedTTL: how long an allowed token is trusted without asking the API server again (a
	// revoked token or a removed RoleBinding takes effect after at most this long); refusedTTL the
	// same for an invalid token or a refusal.
	allowedTTL = time.Minute
	refusedTTL = 10 * time.Second
	// maxReviews bounds the cached results and concurrentReviews the reviews in flight: random
	// tokens cost a bounded amount of memory and of the API server's time.
	maxReviews        = 1024
	concurrentReviews = 4
)

// TokenAuth authenticates a request's bearer token with a TokenReview and authorizes the user it
// names with a SubjectAccessReview for the request's verb on its path as a non-resource URL (get
// /metrics), as kube-rbac-proxy and controller-runtime's metrics filter do. Results are cached
// for a short while, in a bounded cache.
type TokenAuth struct {
	client kubernetes.Interface
	cache  *reviewCache
	sem    chan struct{}
}

// NewTokenAuth asks client's API server; give it a client with a rate limit of its own, so
// metrics requests cannot spend the controller's API budget.
func NewTokenAuth(client kubernetes.Interface, now func() time.Time) *TokenAuth {
	return &TokenAuth{client: client, cache: newReviewCache(maxReviews, now), sem: make(chan struct{}, concurrentReviews)}
}

// review is the outcome for one token, verb and path.
type review struct {
	code int    // http.StatusOK, StatusUnauthorized or StatusForbidden
	msg  string // for the client
}

// Wrap serves h only to requests whose token is allowed: 401 without a valid bearer token, 403
// when the token's user may not use the verb on the path, 503 when the API server does not answer.
// Only GET and HEAD are served (verb get).
func (a *TokenAuth) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+Component+`"`)
			http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
			return
		}
		res, err := a.check(r.Context(), token, "get", r.URL.Path)
		if err != nil {
			klog.FromContext(r.Context()).Error(err, "Metrics request not reviewed", "remote", r.RemoteAddr)
			http.Error(w, "the token could not be reviewed", http.StatusServiceUnavailable)
			return
		}
		if res.code != http.StatusOK {
			if res.code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+Component+`"`)
			}
			http.Error(w, res.msg, res.code)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "bearer") && token != ""
}

// check returns the cached outcome for the token, verb and path, or asks the API server.
func (a *TokenAuth) check(ctx context.Context, token, verb, path string) (review, error) {
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:]) + "\x00" + verb + "\x00" + path
	if res, ok := a.cache.get(key); ok {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	select {
	case a.sem <- struct{}{}:
		defer func() { <-a.sem }()
	case <-ctx.Done():
		return review{}, fmt.Errorf("wait for a review slot: %w", ctx.Err())
	}
	res, err := a.ask(ctx, token, verb, path)
	if err != nil {
		return review{}, err
	}
	ttl := refusedTTL
	if res.code == http.StatusOK {
		ttl = allowedTTL
	}
	a.cache.put(key, res, ttl)
	return res, nil
}

// ask sends the TokenReview and, for an authenticated token, the SubjectAccessReview.
func (a *TokenAuth) ask(ctx context.Context, token, verb, path string) (review, error) {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return review{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		return review{code: http.StatusUnauthorized, msg: "Unauthorized: the token is not valid"}, nil
	}
	u := tr.Status.User
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return review{}, fmt.Errorf("SubjectAccessReview of %s for %s %s: %w", u.Username, verb, path, err)
	}
	if !sar.Status.Allowed {
		return review{code: http.StatusForbidden, msg: fmt.Sprintf("Forbidden: user %q may not %s %s", u.Username, verb, path)}, nil
	}
	return review{code: http.StatusOK}, nil
}
