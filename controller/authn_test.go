package controller

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// reviewingClientset answers TokenReviews and SubjectAccessReviews as an API server whose only
// valid tokens are those of tokens, and whose RBAC lets only user "reader" get /metrics.
func reviewingClientset(tokens map[string]string) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if user, ok := tokens[tr.Spec.Token]; ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: user}}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		nr := sar.Spec.NonResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "reader" && nr != nil && nr.Path == "/metrics" && nr.Verb == "get"
		return true, sar, nil
	})
	return cs
}

func TestTokenAuthCodesAndCache(t *testing.T) {
	cs := reviewingClientset(map[string]string{"good": "reader", "other": "stranger"})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	auth := NewTokenAuth(cs, func() time.Time { return now })
	h := auth.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) }))
	do := func(method, path, authz string) int {
		req := httptest.NewRequest(method, path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	reviews := func() int { n := len(cs.Actions()); cs.ClearActions(); return n }
	for _, tc := range []struct {
		name, method, path, authz string
		want, reviews             int
	}{
		{"no token", "GET", "/metrics", "", http.StatusUnauthorized, 0},
		{"not a bearer token", "GET", "/metrics", "Basic Zm9vOmJhcg==", http.StatusUnauthorized, 0},
		{"invalid token", "GET", "/metrics", "Bearer bad", http.StatusUnauthorized, 1},
		{"invalid token, cached", "GET", "/metrics", "Bearer bad", http.StatusUnauthorized, 0},
		{"valid token, no RBAC", "GET", "/metrics", "Bearer other", http.StatusForbidden, 2},
		{"allowed", "GET", "/metrics", "Bearer good", http.StatusOK, 2},
		{"allowed, cached", "GET", "/metrics", "bearer good", http.StatusOK, 0},
		{"allowed token, another path", "GET", "/debug/pprof/", "Bearer good", http.StatusForbidden, 2},
		{"POST", "POST", "/metrics", "Bearer good", http.StatusMethodNotAllowed, 0},
	} {
		if got := do(tc.method, tc.path, tc.authz); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
		if got := reviews(); got != tc.reviews {
			t.Errorf("%s: %d review calls, want %d", tc.name, got, tc.reviews)
		}
	}
	now = now.Add(refusedTTL)
	if do("GET", "/metrics", "Bearer bad") != http.StatusUnauthorized || reviews() != 1 {
		t.Error("a refusal is not asked again after refusedTTL")
	}
	if do("GET", "/metrics", "Bearer good") != http.StatusOK || reviews() != 0 {
		t.Error("an allowed token was asked again before allowedTTL")
	}
	now = now.Add(allowedTTL)
	if do("GET", "/metrics", "Bearer good") != http.StatusOK || reviews() != 2 {
		t.Error("an allowed token is not asked again after allowedTTL")
	}
}

func TestReviewCacheBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newReviewCache(3, func() time.Time { return now })
	for i := range 10 {
		c.put(strconv.Itoa(i), review{code: i}, time.Minute)
	}
	if c.len() != 3 {
		t.Fatalf("%d entries, want the bound 3", c.len())
	}
	for i := range 10 {
		_, ok := c.get(strconv.Itoa(i))
		if want := i >= 7; ok != want {
			t.Errorf("entry %d kept %v, want %v (the oldest go first)", i, ok, want)
		}
	}
	now = now.Add(time.Minute)
	if _, ok := c.get("9"); ok || c.len() != 2 {
		t.Errorf("expired entry returned %v, %d entries left", ok, c.len())
	}
}
