package ingress

import (
	"testing"
)

// TestIngress runs every behaviour on one 2-node cluster. Subtests with
// their own hosts run in parallel; those that change what every host sees
// (a cluster-wide default backend) or that measure under load run after.
func TestIngress(t *testing.T) {
	suite.Require(t)
	w := startWorld(t)
	t.Run("Parallel", func(t *testing.T) {
		for name, fn := range map[string]func(*testing.T, *world){
			"ExactPrefixLongestMatch": testPaths,
			"TrailingSlashes":         testTrailingSlashes,
			"WildcardHosts":           testWildcardHosts,
			"HostlessRules":           testHostlessRules,
			"ClassSelection":          testClassSelection,
			"Conflicts":               testConflicts,
			"ForwardedHeaders":        testForwardedHeaders,
			"EveryNodeServes":         testEveryNodeServes,
			"TLSWithSNI":              testTLS,
			"Redirects":               testRedirects,
			"HTTP2":                   testHTTP2,
			"WebSocket":               testWebSocket,
			"GRPC":                    testGRPC,
			"BackendProtocolHTTPS":    testBackendHTTPS,
			"RewriteTarget":           testRewriteTarget,
			"UseRegexOnlyItsIngress":  testUseRegex,
			"CanaryWeight":            testCanaryWeight,
			"CanaryByHeader":          testCanaryByHeader,
			"CookieAffinity":          testCookieAffinity,
			"ProxyConnectTimeout":     testConnectTimeout,
			"ProxyReadTimeout":        testReadTimeout,
			"ProxySendTimeout":        testSendTimeout,
			"ProxyBodySize":           testBodySize,
			"SourceRanges":            testSourceRanges,
			"UnsupportedAnnotations":  testUnsupportedAnnotations,
			"NoEndpoints":             testNoEndpoints,
			"MalformedRequests":       testMalformedRequests,
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fn(t, w)
			})
		}
	})
	t.Run("DefaultBackend", func(t *testing.T) { testDefaultBackend(t, w) })
	t.Run("EndpointRemovalUnderLoad", func(t *testing.T) { testEndpointRemoval(t, w) })
	t.Run("UpdatesUnderLoad", func(t *testing.T) { testUpdatesUnderLoad(t, w) })
	t.Run("ConfigReload", func(t *testing.T) { testConfigReload(t, w) })
	t.Run("StatusAndObservability", func(t *testing.T) { testStatus(t, w) })
}
