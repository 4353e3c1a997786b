package benchkit

import (
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodenet/nodenet/test/harness"
)

// WriteAdminKubeconfig writes admin credentials for cp that work from any
// node namespace (cp.AdminKubeconfig points at 127.0.0.1 in the control
// plane's), for agents started with --kubeconfig.
func WriteAdminKubeconfig(cp *harness.ControlPlane, path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bench"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: cp.Admin.CAData}
	cfg.AuthInfos["bench"] = &clientcmdapi.AuthInfo{ClientCertificateData: cp.Admin.CertData, ClientKeyData: cp.Admin.KeyData}
	cfg.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	cfg.CurrentContext = "bench"
	return clientcmd.WriteToFile(*cfg, path)
}

// BulkClient is an admin client for creating thousands of objects: its
// rate limit is far above the harness client's QPS.
func BulkClient(cp *harness.ControlPlane) (*kubernetes.Clientset, error) {
	rc := rest.CopyConfig(cp.Admin)
	rc.QPS, rc.Burst = 2000, 4000
	return kubernetes.NewForConfig(rc)
}
