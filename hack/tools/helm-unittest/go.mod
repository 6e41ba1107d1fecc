module kilo-clustermesh-operator/hack/tools/helm-unittest

go 1.26.0

tool github.com/helm-unittest/helm-unittest

require github.com/helm-unittest/helm-unittest v1.1.2 // indirect
