"""Running s4op on Ray clusters.

`storage`: where a search folder may live on a cluster (`check_search_storage`).
`local`: a multi-node Ray cluster on 127.0.0.1, started and stopped by PID (`s4op cluster local`).
`aws/`, `gcp/`, `kuberay/`: `ray up` configs and KubeRay manifests; see `cluster/README.md`.
"""
