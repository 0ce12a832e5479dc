/** The metadata every cluster object carries, and labels (shared by the cluster model and the policy kinds). */

export type Labels = Readonly<Record<string, string>>;

export interface ObjectMeta {
  name: string;
  /** empty for cluster-scoped objects (Namespace) */
  namespace: string;
  labels: Labels;
  annotations: Labels;
  /** where it came from, for messages: "examples/shop.yaml#2" or "kubernetes" */
  source: string;
  /** metadata.uid, when the source has one (the Kubernetes API) */
  uid?: string;
  /** the controller among metadata.ownerReferences (e.g. a ReplicaSet), when there is one */
  owner?: { kind: string; name: string };
}
