package realnode

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/images"
)

// The project's images as the real node runs them: built by test/images (what `make images`
// writes), tagged under ImageRepo at ImageVersion, imported into containerd (never pulled).
const (
	ImageRepo    = "localhost/redhat-cop"
	ImageVersion = "e2e"
)

// ControllerImage and WaitImage are the tags of the project's images on the real node.
var (
	ControllerImage = images.Tag(ImageRepo, images.Controller, ImageVersion)
	WaitImage       = images.Tag(ImageRepo, images.Wait, ImageVersion)
)

// BuildProjectImages builds the controller and wait binaries (`make build`) and their images into
// dir (docker-archives, as `make images`; the controller's Debian root file system is cached per
// machine) and returns the archives for Options.Images.
func BuildProjectImages(ctx context.Context, dir string, log io.Writer) ([]string, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "bin")
	if err := images.MakeBuild(ctx, root, bin, ImageVersion); err != nil {
		return nil, err
	}
	cache, err := images.DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	return images.Build(ctx, images.Options{
		Specs: images.All(), BinDir: bin, OutDir: dir, Repo: ImageRepo, Version: ImageVersion, CacheDir: cache, Progress: log,
	})
}

// HelmInstall runs `helm install` of the chart in chartDir (the module's
// charts/istio-pod-network-controller when empty) as release in namespace (created), with the
// local images (pullPolicy Never), the API server's address (k8sServiceHost/k8sServicePort: no
// kube-proxy here) and the extra --set values, and returns helm's output.
func (n *Node) HelmInstall(ctx context.Context, chartDir, release, namespace string, set ...string) ([]byte, error) {
	if chartDir == "" {
		var err error
		if chartDir, err = ChartDir(ctx); err != nil {
			return nil, err
		}
	}
	args := []string{"install", release, chartDir, "--namespace", namespace, "--create-namespace"}
	for _, v := range append(n.ChartOverrides(), set...) {
		args = append(args, "--set", v)
	}
	return n.Helm(ctx, args...)
}

// ChartOverrides are the chart's values on this node: the local images (pullPolicy Never), the
// API server's address (k8sServiceHost/k8sServicePort: no kube-proxy here) and RecordEnv's
// setting.
func (n *Node) ChartOverrides() []string {
	return append([]string{
		"image.repository=" + strings.TrimSuffix(ControllerImage, ":"+ImageVersion), "image.tag=" + ImageVersion, "image.pullPolicy=Never",
		"waitImage.repository=" + strings.TrimSuffix(WaitImage, ":"+ImageVersion), "waitImage.tag=" + ImageVersion,
		"k8sServiceHost=" + n.APIServerHost, "k8sServicePort=" + n.APIServerPort,
	}, recordOverrides()...)
}

// HelmEnv is the environment of a helm command against the node: helm's cache, configuration and
// data directories in the node's state directory.
func (n *Node) HelmEnv() []string {
	return append(os.Environ(), "HELM_CACHE_HOME="+n.d.p("helm/cache"), "HELM_CONFIG_HOME="+n.d.p("helm/config"), "HELM_DATA_HOME="+n.d.p("helm/data"))
}

// InjectedPodFile is the injection test's golden output: the pod Istio's injector makes from
// test/injection/testdata/sample-deployment.yaml with the chart's template (classic sidecar).
const InjectedPodFile = "test/injection/testdata/injected-classic.yaml"

// MeshDeployment returns a Deployment whose pod template is the injector's output
// (InjectedPodFile) with the images this node has: the project's wait image, and the stand-in
// (StandinImage) for the application (`standin app`), its init container (`standin init`) and
// istio-proxy (`standin proxy`: 15001/15006 answer with the original destination, 15020/15021 serve
// the probes). Everything else (security contexts, probes, volumes, annotations) is the
// injector's.
func MeshDeployment(ctx context.Context, namespace, name string, replicas int32) (*appsv1.Deployment, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	pod, err := harness.LoadPod(filepath.Join(root, InjectedPodFile))
	if err != nil {
		return nil, err
	}
	for init, list := range map[bool][]corev1.Container{true: pod.Spec.InitContainers, false: pod.Spec.Containers} {
		for i := range list {
			c := &list[i]
			c.ImagePullPolicy = corev1.PullNever
			switch {
			case c.Name == harness.WaitContainer:
				c.Image = WaitImage
			case c.Name == podconfig.ProxyContainer:
				c.Image, c.Command, c.Args = StandinImage, []string{"/standin"}, []string{"proxy"}
			case init:
				c.Image, c.Command, c.Args = StandinImage, []string{"/standin"}, []string{"init"}
			default:
				c.Image, c.Command, c.Args = StandinImage, []string{"/standin"}, []string{"app"}
			}
		}
	}
	labels := map[string]string{"app": name}
	meta := metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations}
	delete(meta.Labels, "pod-template-hash")
	meta.Labels["app"] = name
	pod.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: meta, Spec: pod.Spec},
		},
	}, nil
}
