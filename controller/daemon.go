package controller

import (
	"context"
	"fmt"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Component is the controller's name in Events and as the API client's user agent.
const Component = "istio-pod-network-controller"

// RESTConfig returns the API client configuration: kubeconfig when set, else in-cluster.
func (c *NodeConfig) RESTConfig() (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if c.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("API client configuration (kubeconfig %q): %w", c.Kubeconfig, err)
	}
	cfg.UserAgent = Component
	return cfg, nil
}

// RunDaemon is the run subcommand: it serves health and metrics, detects the iptables backend,
// runs the controller until ctx is done, drains, and returns. cfg must be validated.
func RunDaemon(ctx context.Context, cfg Config) error {
	logger := klog.FromContext(ctx)
	restCfg, err := cfg.RESTConfig()
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = float32(cfg.KubeAPIQPS), cfg.KubeAPIBurst
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("API client: %w", err)
	}

	metrics := NewMetrics()
	var ctrl atomic.Pointer[Controller]
	servers, err := StartEndpoints(ctx, cfg, restCfg, metrics, func() bool { c := ctrl.Load(); return c != nil && c.Ready() })
	if err != nil {
		return err
	}
	defer servers.Shutdown()

	applier, err := netsetup.NewApplier(ctx, netsetup.Options{Backend: cfg.Backend(), LockDir: cfg.LockDir})
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	logger.Info("iptables backend", "backend", applier.Backend(), "override", cfg.IPTablesBackend, "rulesBackend", cfg.Rules())
	finder, err := netns.New(cfg.FinderOptions())
	if err != nil {
		return fmt.Errorf("namespace discovery: %w", err)
	}
	defer finder.Close()

	// Events and in-flight work outlive ctx (SIGTERM) until the drain is over.
	bg, cancelBg := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBg()
	broadcaster := record.NewBroadcaster(record.WithContext(bg))
	defer broadcaster.Shutdown()
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: cfg.NodeName})

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods()
	wait := cfg.WaitContainerName
	if wait == "" {
		wait = DefaultWaitContainerName
	}
	if err := pods.Informer().SetTransform(TrimPod(wait)); err != nil {
		return err
	}
	c, err := New(Options{
		NodeName:          cfg.NodeName,
		WaitContainerName: cfg.WaitContainerName,
		DriftPeriod:       cfg.DriftPeriod,
		Workers:           cfg.Workers,
		Client:            client,
		Pods:              pods,
		Finder:            NetnsFinder{finder},
		Applier:           NodeBackends(&cfg.NodeConfig, applier),
		Recorder:          recorder,
		Metrics:           metrics,
		OpenNamespaces:    netns.OpenFDs,
		Records:           cfg.recordWriter(),
		LocalCNIDir:       cfg.localCNIDir(),
	})
	if err != nil {
		return err
	}
	ctrl.Store(c)
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	return c.Run(ctx)
}
