package chart

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2/ktesting"

	"github.com/redhat-cop/istio-pod-network-controller/controller"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// testMetricsAuth serves the controller's endpoints as `run` does, with the controller's own token
// (bound to its pod, with the chart's RBAC), and scrapes /metrics over TLS: a token bound to the
// chart's metrics-reader ClusterRole gets 200 and the metrics, a valid token without that binding
// 403, no token or an invalid one 401, and plain HTTP is refused.
func testMetricsAuth(t *testing.T, ctx context.Context, c *cluster.Cluster, in *harness.Install) {
	ns := uniqueName("chart-metrics")
	if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		mustCreate(t, func() error {
			_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
			return err
		})
		tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	scraper, stranger := token("scraper"), token("stranger")
	mustCreate(t, func() error {
		_, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-scraper"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: release + "-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: ns}},
		}, metav1.CreateOptions{})
		return err
	})

	controllerToken, err := c.PodToken(ctx, in.Pod, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The chart's RBAC lets the controller ask both reviews (least privilege: nothing more, see
	// testAnnotationPolicy).
	cs := clientFor(t, c, controllerToken)
	if _, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: scraper}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("the controller creates a TokenReview: %v", err)
	}
	if _, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: "system:serviceaccount:" + ns + ":scraper", NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
	}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("the controller creates a SubjectAccessReview: %v", err)
	}
	_, lctx := ktesting.NewTestContext(t)
	cfg := controller.DefaultConfig(func(string) string { return "" })
	cfg.NodeName, cfg.MetricsAddress, cfg.HealthAddress = c.NodeName, "127.0.0.1:0", "127.0.0.1:0"
	servers, err := controller.StartEndpoints(lctx, cfg, c.ConfigForToken(controllerToken), controller.NewMetrics(), func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer servers.Shutdown()
	addr := servers.Addr(0).String()

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(scheme, token string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s GET /metrics: %v", scheme, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	const series = "istio_pod_network_controller_pods_configured_total"
	for _, tc := range []struct {
		name, scheme, token string
		want                int
	}{
		{"token allowed by the metrics-reader role", "https", scraper, http.StatusOK},
		{"valid token without the role", "https", stranger, http.StatusForbidden},
		{"no token", "https", "", http.StatusUnauthorized},
		{"invalid token", "https", "not-a-token", http.StatusUnauthorized},
		{"plain HTTP, allowed token", "http", scraper, http.StatusBadRequest},
		{"allowed token again (cached)", "https", scraper, http.StatusOK},
	} {
		code, body := scrape(tc.scheme, tc.token)
		if code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, firstLine(body), tc.want)
		}
		if got := strings.Contains(body, series); got != (tc.want == http.StatusOK) {
			t.Errorf("%s: body has the metrics %v, want %v", tc.name, got, tc.want == http.StatusOK)
		}
	}
	if code, body := scrape("https", stranger); !strings.Contains(body, `user "system:serviceaccount:`+ns+`:stranger" may not get /metrics`) {
		t.Errorf("refusal %d %q does not name the user and the URL", code, body)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
