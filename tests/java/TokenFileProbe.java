// Reads a Hadoop token file with Hadoop's own classes and prints, one JSON object per
// line, each token's kind and service and what Hadoop decodes from its identifier.
// Used to prove that Cortex's credentials are tokens the stock client understands.
import java.io.File;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.security.Credentials;
import org.apache.hadoop.security.token.Token;
import org.apache.hadoop.security.token.TokenIdentifier;
import org.apache.hadoop.security.token.delegation.AbstractDelegationTokenIdentifier;

public class TokenFileProbe {
  private static String quote(String s) {
    return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }

  public static void main(String[] args) throws Exception {
    Credentials credentials = Credentials.readTokenStorageFile(new File(args[0]), new Configuration());
    for (Token<? extends TokenIdentifier> token : credentials.getAllTokens()) {
      StringBuilder out = new StringBuilder("{\"kind\":").append(quote(token.getKind().toString()));
      out.append(",\"service\":").append(quote(token.getService().toString()));
      out.append(",\"urlString\":").append(quote(token.encodeToUrlString()));
      TokenIdentifier ident = token.decodeIdentifier();
      out.append(",\"class\":").append(quote(ident == null ? "" : ident.getClass().getName()));
      if (ident instanceof AbstractDelegationTokenIdentifier) {
        AbstractDelegationTokenIdentifier d = (AbstractDelegationTokenIdentifier) ident;
        out.append(",\"owner\":").append(quote(d.getOwner().toString()));
        out.append(",\"renewer\":").append(quote(d.getRenewer().toString()));
        out.append(",\"issueDate\":").append(d.getIssueDate());
        out.append(",\"maxDate\":").append(d.getMaxDate());
        out.append(",\"sequenceNumber\":").append(d.getSequenceNumber());
        out.append(",\"masterKeyId\":").append(d.getMasterKeyId());
        out.append(",\"user\":").append(quote(d.getUser().getShortUserName()));
      }
      System.out.println(out.append("}"));
    }
  }
}
