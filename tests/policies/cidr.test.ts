import t from 'tap';
import { cidrContains, cidrCovers, formatIp, parseCidr, parseIp, type Cidr } from '../../policies/cidr.js';

const cidr = (s: string): Cidr => {
  const c = parseCidr(s);
  if (typeof c === 'string') throw new Error(c);
  return c;
};

t.test('CIDRs parse and normalise; bad ones say why', async (t) => {
  const cases: [string, string][] = [
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['192.168.1.7/32', '192.168.1.7/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['2001:db8::/32', '2001:db8:0:0:0:0:0:0/32'],
    ['::ffff:192.0.2.0/120', '0:0:0:0:0:ffff:c000:200/120'],
    ['::/0', '0:0:0:0:0:0:0:0/0'],
    ['10.0.0.0', 'must be a CIDR (an address and a prefix length, e.g. "10.0.0.0/8"), got "10.0.0.0"'],
    ['10.0.0.0/33', 'the prefix length must be 0-32 for an IPv4 address, got "33"'],
    ['2001:db8::/129', 'the prefix length must be 0-128 for an IPv6 address, got "129"'],
    ['10.0.0.0/x', 'the prefix length must be 0-32 for an IPv4 address, got "x"'],
    ['10.0.0.256/8', '"10.0.0.256" is not an IPv4 or IPv6 address'],
    ['fe80::1%eth0/64', '"fe80::1%eth0" is not an IPv4 or IPv6 address'],
  ];
  for (const [input, want] of cases) {
    const c = parseCidr(input);
    t.equal(typeof c === 'string' ? c : c.text, want, input);
  }
});

t.test('addresses round-trip, including embedded IPv4 in IPv6', async (t) => {
  const cases: [string, string | undefined][] = [
    ['198.18.0.1', '198.18.0.1'],
    ['::1', '0:0:0:0:0:0:0:1'],
    ['2001:db8::8:800:200c:417a', '2001:db8:0:0:8:800:200c:417a'],
    ['::ffff:1.2.3.4', '0:0:0:0:0:ffff:102:304'],
    ['::1.2.3.4', '0:0:0:0:0:0:102:304'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['nope', undefined],
    ['010.1.1.1', undefined],
  ];
  for (const [input, want] of cases) {
    const a = parseIp(input);
    t.equal(a && formatIp(a), want, input);
  }
});

t.test('containment of addresses and blocks', async (t) => {
  const ip = (s: string) => parseIp(s)!;
  t.ok(cidrContains(cidr('10.0.0.0/8'), ip('10.255.0.1')), '10.255.0.1 in 10/8');
  t.notOk(cidrContains(cidr('10.0.0.0/8'), ip('11.0.0.1')), '11.0.0.1 not in 10/8');
  t.ok(cidrContains(cidr('0.0.0.0/0'), ip('203.0.113.9')), 'everything in 0/0');
  t.notOk(cidrContains(cidr('0.0.0.0/0'), ip('::1')), 'an IPv6 address is never in an IPv4 block');
  t.ok(cidrContains(cidr('2001:db8::/32'), ip('2001:db8:ffff::1')), 'IPv6 containment');
  t.ok(cidrCovers(cidr('10.0.0.0/8'), cidr('10.1.0.0/16')), '10.1/16 inside 10/8');
  t.ok(cidrCovers(cidr('10.0.0.0/8'), cidr('10.0.0.0/8')), 'a block covers itself');
  t.notOk(cidrCovers(cidr('10.1.0.0/16'), cidr('10.0.0.0/8')), 'a wider block is not inside');
  t.notOk(cidrCovers(cidr('10.0.0.0/8'), cidr('11.0.0.0/16')), 'a disjoint block is not inside');
});
