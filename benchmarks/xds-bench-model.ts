/** The mesh the xDS benchmark serves: n plain HTTP services with 2 endpoints each. */
import type { MeshService } from '../xds/mesh-resources.js';

/** Services of one generation: every service's second endpoint port moves with it. */
export function benchServices(n: number, generation = 0): MeshService[] {
  return Array.from({ length: n }, (_, i) => ({
    namespace: 'bench', name: `svc-${i}`, port: 80, listenerPort: 20000 + i,
    endpoints: [
      { ip: `198.18.${(i >> 8) & 255}.${i & 255 || 1}`, port: 8080 },
      { ip: `198.18.${200 + ((i >> 8) & 15)}.${i & 255 || 1}`, port: 8080 + generation },
    ],
  }));
}
