// A build-only module: it pins the Dapr runtime and CLI so that runtime/build.sh can
// build daprd, placement, scheduler and the dapr CLI from the Go module proxy.
// github.com/dapr/dapr declares replace directives, which Go honours only in the main
// module, so they are repeated here (keep them in step when the pin moves).
module consort.local/runtime

go 1.26.6

require github.com/dapr/dapr v1.18.3

replace (
	dubbo.apache.org/dubbo-go/v3 => dubbo.apache.org/dubbo-go/v3 v3.0.3-0.20230118042253-4f159a2b38f3
	github.com/apache/pulsar-client-go v0.18.0 => github.com/twmb/pulsar-client-go v0.20.1-0.20260624144353-90eefc81f70a
	gopkg.in/couchbaselabs/gocbconnstr.v1 => github.com/couchbaselabs/gocbconnstr v1.0.5
)

replace (
	github.com/chenzhuoyu/iasm => github.com/chenzhuoyu/iasm v0.9.0
	github.com/chzyer/logex => github.com/chzyer/logex v1.2.1
	github.com/gobwas/pool => github.com/gobwas/pool v0.2.1
	github.com/toolkits/concurrent => github.com/niean/gotools v0.0.0-20151221085310-ff3f51fc5c60
)

// The Go module proxy reachable here refuses github.com/dapr/durabletask-go v0.12.4, the
// version v1.18.3 requires (403 "This module version is not available"). Build against the
// newest one it serves on that line, the revision dapr v1.18.2 shipped with.
replace github.com/dapr/durabletask-go => github.com/dapr/durabletask-go v0.12.2-0.20260720132056-79042da5fe61
