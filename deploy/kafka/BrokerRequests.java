// Counts the requests a running Kafka broker has served, by API (Produce, Fetch, OffsetCommit, ...),
// from the broker's own metrics (the MBeans kafka.network:type=RequestMetrics,name=RequestsPerSec,
// whose Count is cumulative): `java -cp 'libs/*' BrokerRequests.java PID`. It attaches to the
// broker's JVM (same user; the JDK's Attach API starts the JVM's local management agent, so the
// broker needs no JMX port or setting), prints `ready`, then one line per line read on standard
// input: `Produce=123 Fetch=456 ...`, the counts at that moment. Run from source by the JDK (no
// build step); used by `tiny-saga bench` for the Kafka requests per saga of each phase.
import com.sun.tools.attach.VirtualMachine;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.Map;
import java.util.TreeMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class BrokerRequests {
    public static void main(String[] args) throws Exception {
        VirtualMachine vm = VirtualMachine.attach(args[0]);
        String url;
        try {
            url = vm.startLocalManagementAgent();
        } finally {
            vm.detach();
        }
        ObjectName pattern = new ObjectName("kafka.network:type=RequestMetrics,name=RequestsPerSec,*");
        try (JMXConnector jmx = JMXConnectorFactory.connect(new JMXServiceURL(url))) {
            MBeanServerConnection server = jmx.getMBeanServerConnection();
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            System.out.println("ready");
            System.out.flush();
            while (in.readLine() != null) {
                Map<String, Long> counts = new TreeMap<>();
                for (ObjectName name : server.queryNames(pattern, null)) {
                    long n = ((Number) server.getAttribute(name, "Count")).longValue();
                    counts.merge(name.getKeyProperty("request"), n, Long::sum);
                }
                StringBuilder line = new StringBuilder();
                for (Map.Entry<String, Long> e : counts.entrySet()) {
                    line.append(e.getKey()).append('=').append(e.getValue()).append(' ');
                }
                System.out.println(line.toString().trim());
                System.out.flush();
            }
        }
    }
}
