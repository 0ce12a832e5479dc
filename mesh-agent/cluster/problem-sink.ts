/** What a manifest parser records problems with: the field path and the reason. */
export interface ProblemSink {
  add(field: string, reason: string): void;
}
