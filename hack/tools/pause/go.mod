// The test kit node's sandbox ("pause") program: this module's own code, no dependency.
module kilo-clustermesh-operator/hack/tools/pause

go 1.26.0
