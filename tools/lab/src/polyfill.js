// @peculiar/x509 resolves its services through tsyringe, which needs the
// Reflect metadata API: load it before anything imports @peculiar/x509.
import "reflect-metadata";
